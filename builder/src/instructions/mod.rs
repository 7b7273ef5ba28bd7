//! Typed commands per stage, lowered from the syntax tree: validated flags, ARG/ENV scoping with
//! build-arg overrides and the predefined platform and proxy args, and word expansion in exactly
//! the places Docker expands.
