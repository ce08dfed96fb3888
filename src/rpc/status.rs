//! The library's errors as gRPC status codes, and back: the one place
//! where [`crate::Error`] meets the transport.

use crate::Error;
use tonic::{Code, Status};

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::NotReady(message) => Status::failed_precondition(message),
            Error::TimedOut(message) => Status::deadline_exceeded(message),
            Error::Unavailable(message) | Error::Quorum(message) => Status::unavailable(message),
            other => Status::internal(other.to_string()),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            // A message over the receiver's size limit.
            Code::ResourceExhausted | Code::OutOfRange => {
                Error::InvalidArgument(format!("the request is too large: {message}"))
            }
            Code::NotFound => Error::NotFound(message),
            Code::FailedPrecondition => Error::NotReady(message),
            Code::DeadlineExceeded => Error::TimedOut(message),
            Code::Unavailable => Error::Unavailable(message),
            code => Error::Unavailable(format!("{code:?}: {message}")),
        }
    }
}

/// A transport failure (binding, serving, connecting) as a library error.
pub fn transport_error(error: tonic::transport::Error) -> Error {
    Error::Unavailable(format!("transport: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_keeps_its_meaning_across_the_wire() {
        for error in [
            Error::InvalidArgument("a".into()),
            Error::NotFound("b".into()),
            Error::NotReady("c".into()),
            Error::TimedOut("e".into()),
            Error::Unavailable("d".into()),
        ] {
            let expected = error.to_string();
            let back = Error::from(Status::from(error));
            assert_eq!(back.to_string(), expected);
        }
    }
}
