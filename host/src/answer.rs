//! The answer of one invocation as one typed value: what the function said (or the host's JSON
//! error when it failed), with the [`Summary`] the function reported beside it. It is made once,
//! where the invocation ends ([`crate::invoke`]), and then flows to the cache, the idempotency
//! record, the ledger and the client's reply without being collected or parsed again.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use yolo_core::report;
pub use yolo_core::report::Summary;

/// A finished answer, without the per-invocation metering headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The function's own headers (content type, ...), without hop-by-hop ones and without
    /// the private headers of [`yolo_core::report`].
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(with = "body_b64")]
    pub body: Bytes,
    /// What a detection answer found (absent from answers cached by hosts before it existed).
    #[serde(default)]
    pub summary: Summary,
}

impl Answer {
    /// A JSON answer the host writes itself (an error), with nothing found.
    pub fn json(status: u16, body: String) -> Self {
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        Self { status, headers, body: Bytes::from(body), summary: Summary::default() }
    }

    /// The headers to store with the answer under an idempotency key: its own, and its
    /// summary in the function's private headers (the ledger keeps headers, not summaries).
    pub fn stored_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(n) = self.summary.detections {
            headers.push((report::DETECTIONS_HEADER.to_owned(), n.to_string()));
            headers.push((report::CLASSES_HEADER.to_owned(), self.summary.classes_header()));
        }
        headers
    }

    /// An answer whose headers may carry the function's report of what it found (as the
    /// function sends it, and as [`Answer::stored_headers`] keeps it): those headers are taken
    /// out into its summary.
    pub fn reported(status: u16, mut headers: Vec<(String, String)>, body: Bytes) -> Self {
        let mut take = |name: &str| {
            let at = headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))?;
            Some(headers.remove(at).1)
        };
        let detections = take(report::DETECTIONS_HEADER);
        let summary = Summary::from_headers(detections.as_deref(), take(report::CLASSES_HEADER).as_deref());
        Self { status, headers, body, summary }
    }
}

/// The body as base64 text in a serialised answer (the Redis cache stores JSON).
mod body_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_serialisation_and_old_entries_still_read() {
        let a = Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{\"count\":1}"),
            summary: Summary { detections: Some(1), classes: vec!["cup".into()] },
        };
        assert_eq!(serde_json::from_slice::<Answer>(&serde_json::to_vec(&a).unwrap()).unwrap(), a);
        let old = r#"{"status":200,"headers":[],"body":"e30="}"#;
        let read: Answer = serde_json::from_str(old).unwrap();
        assert_eq!((read.body.as_ref(), read.summary), (b"{}".as_slice(), Summary::default()));
        let stored = Answer::reported(a.status, a.stored_headers(), a.body.clone());
        assert_eq!(stored, a, "an idempotent answer keeps its summary in the ledger's headers");
    }
}
