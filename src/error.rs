//! The library's one error type, with variants that mean something to the
//! caller, and their mapping to gRPC status codes.

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (too long, empty, malformed); retrying it
    /// unchanged will not help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A node needed for the answer could not be reached, or this node is
    /// not (yet, or any more) in a ring; retrying later may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Fewer replicas answered than the write or read quorum needs; the
    /// message says how many did. (A write answered so may or may not
    /// survive.)
    #[error("unavailable: {0}")]
    Quorum(String),
    /// A configuration or data-directory problem found at start-up.
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        match error {
            Error::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            Error::NotFound(message) => tonic::Status::not_found(message),
            Error::Unavailable(message) | Error::Quorum(message) => {
                tonic::Status::unavailable(message)
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(message),
            // A message over the receiver's size limit.
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
                Error::InvalidArgument(format!("the request is too large: {message}"))
            }
            tonic::Code::NotFound => Error::NotFound(message),
            tonic::Code::Unavailable => Error::Unavailable(message),
            code => Error::Unavailable(format!("{code:?}: {message}")),
        }
    }
}
