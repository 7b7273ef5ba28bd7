//! The load balancer's one error type.

use std::io;
use std::net::SocketAddr;

/// What went wrong while starting the load balancer or changing its targets.
///
/// Failures of single client connections (a target that refuses, no target available) are not
/// errors of the API: they are logged, counted in [`super::Stats`] and
/// [`super::TargetState::failed_connects`], and the client connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener could not be bound (address in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why `bind` or `listen` failed.
        #[source]
        source: io::Error,
    },

    /// `deregister` named a target that is not registered (never was, or its deregistration
    /// has completed).
    #[error("no target {id:?} is registered with this load balancer")]
    UnknownTarget {
        /// The target id as given.
        id: String,
    },

    /// `register` named a target that is already registered at another address. A target id
    /// stands for one address for as long as it is registered; deregister it first.
    #[error("target {id:?} is already registered at {registered}, not at {requested}")]
    AddressConflict {
        /// The target id as given.
        id: String,
        /// The address the target is registered at.
        registered: SocketAddr,
        /// The address that was asked for.
        requested: SocketAddr,
    },

    /// `register` named a target that is draining. It can be registered again once its
    /// deregistration has completed.
    #[error("target {id:?} is draining; register it again once its deregistration completes")]
    Draining {
        /// The target id as given.
        id: String,
    },
}
