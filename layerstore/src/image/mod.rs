//! Image formats: OCI and Docker schema-2 manifests, indexes and configs; the OCI image layout (directory and tar) and docker-archive.
