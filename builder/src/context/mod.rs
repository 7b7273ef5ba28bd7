//! The build context: `.dockerignore` (and `<Dockerfile>.dockerignore`) with Docker's matching
//! rules, and a walker over the context directory that applies it and never leaves the context.
