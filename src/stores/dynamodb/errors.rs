//! The DynamoDB store's errors: what the SDK answered, as a [`StoreError`] people can act on.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::{StoreError, StoreErrorKind};

/// Error codes DynamoDB answers when a table or the account is over its request rate: the
/// SDK retried with backoff before giving up, and a later retry may succeed.
const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Error codes of requests the service refused because of who sent them.
const REFUSED_IDENTITY: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "AccessDeniedException",
    "ExpiredTokenException",
    "IncompleteSignatureException",
];

/// Error codes of a service that had a passing problem.
const PASSING: &[&str] = &["InternalServerError", "ServiceUnavailable"];

/// The error of one SDK call: `what` says what was being done ("acquiring 'k'"), `store`
/// names the store. Messages never hold credentials: the SDK's own texts carry error codes,
/// addresses and table names, never keys or secrets.
pub(super) fn sdk_error<E, R>(e: SdkError<E, R>, store: &str, what: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&e).to_string();
    let (kind, message) = match &e {
        SdkError::DispatchFailure(d) if d.is_timeout() => (
            StoreErrorKind::Transient,
            format!("{store}: timed out {what} ({detail}); retrying may help"),
        ),
        SdkError::DispatchFailure(_) => (
            StoreErrorKind::Unavailable,
            format!(
                "cannot connect to {store} while {what} ({detail}); is the endpoint up and \
                 reachable?"
            ),
        ),
        SdkError::TimeoutError(_) => (
            StoreErrorKind::Transient,
            format!("{store}: timed out {what}; retrying may help"),
        ),
        SdkError::ConstructionFailure(_) => (
            StoreErrorKind::Unavailable,
            format!(
                "{store}: could not build the request for {what} ({detail}); check the AWS \
                 region and credentials (AWS_REGION, AWS_PROFILE, ?region=)"
            ),
        ),
        SdkError::ResponseError(_) => (
            StoreErrorKind::Transient,
            format!("{store}: unreadable answer while {what} ({detail})"),
        ),
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("unknown error");
            let text = s.err().message().unwrap_or("");
            service_error(code, text, store, what)
        }
        _ => (
            StoreErrorKind::Transient,
            format!("{store}: {what} failed ({detail})"),
        ),
    };
    StoreError::new(kind, message).with_source(e)
}

/// The kind and message of an error code DynamoDB answered.
fn service_error(code: &str, text: &str, store: &str, what: &str) -> (StoreErrorKind, String) {
    if THROTTLED.contains(&code) {
        return (
            StoreErrorKind::Transient,
            format!(
                "{store} is throttling requests ({code}: {text}) while {what}; retry later, or \
                 raise the table's capacity (on-demand billing avoids it)"
            ),
        );
    }
    if REFUSED_IDENTITY.contains(&code) {
        return (
            StoreErrorKind::Unavailable,
            format!(
                "{store} refused the credentials ({code}: {text}) while {what}; check the \
                 access key and its permissions (GetItem, UpdateItem, Scan, DescribeTable, \
                 CreateTable)"
            ),
        );
    }
    if PASSING.contains(&code) {
        return (
            StoreErrorKind::Transient,
            format!("{store} had a passing failure ({code}: {text}) while {what}"),
        );
    }
    if code == "ResourceNotFoundException" {
        return (
            StoreErrorKind::Rejected,
            format!(
                "{store}: the table does not exist ({text}) while {what}; let the store create \
                 it (leave out ?create_table=false) or create it with hash key `key` of type S"
            ),
        );
    }
    (
        StoreErrorKind::Rejected,
        format!("{store} refused {what} ({code}: {text})"),
    )
}

/// An item under `key` that is not a lock record of Verrou's layout.
pub(super) fn not_a_lock(store: &str, key: &str, why: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Rejected,
        format!(
            "{store}: the item under key '{key}' is not a lock record ({why}); is the table \
             used for something else? Use a table of its own for locks"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retryable_and_says_what_to_do() {
        let (kind, message) = service_error(
            "ProvisionedThroughputExceededException",
            "rate exceeded",
            "dynamodb://h:1/t",
            "acquiring 'k'",
        );
        assert_eq!(kind, StoreErrorKind::Transient);
        assert!(StoreError::new(kind, "").is_retryable());
        assert!(
            message.contains("throttling") && message.contains("'k'"),
            "{message}"
        );
    }

    #[test]
    fn a_refused_identity_is_unavailable_and_a_validation_error_rejected() {
        let (kind, _) = service_error("UnrecognizedClientException", "", "s", "w");
        assert_eq!(kind, StoreErrorKind::Unavailable);
        let (kind, _) = service_error("ValidationException", "bad key", "s", "w");
        assert_eq!(kind, StoreErrorKind::Rejected);
    }
}
