//! What the function tells the host about an answer, beside the answer itself: response headers
//! that only the host reads (it removes them before the client sees the response, so a client
//! never sees them and the function's JSON is never parsed again to learn them).
//!
//! - [`PIXELS_HEADER`]: the decoded image's pixel count, for metering;
//! - [`DETECTIONS_HEADER`] and [`CLASSES_HEADER`]: the [`Summary`] of a `/detect` answer, for
//!   the audit log and the metrics.

use serde::{Deserialize, Serialize};

use crate::response::DetectResponse;

/// The decoded image's pixel count (a decimal number).
pub const PIXELS_HEADER: &str = "x-yolo-edge-pixels";
/// The number of detections in a `/detect` answer (a decimal number).
pub const DETECTIONS_HEADER: &str = "x-yolo-edge-detections";
/// The distinct class names of a `/detect` answer, sorted, each percent-encoded (so a label in
/// any language, or with a comma, travels in a header), joined by `,`.
pub const CLASSES_HEADER: &str = "x-yolo-edge-classes";

/// Bytes written as `%XX` in a class name: all but ASCII letters, digits, `-`, `.`, `_`, `~`.
/// (`percent-encoding`, from the `url` crate's authors, rather than a hand-written escaper.)
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What a `/detect` (or `/detect/batch`) answer found, as the host records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The number of detections (in a batch, of all its images; none for other answers).
    pub detections: Option<u64>,
    /// Their distinct class names, sorted.
    pub classes: Vec<String>,
}

impl Summary {
    /// The summary of a detection answer.
    pub fn of(answer: &DetectResponse) -> Self {
        let mut classes: Vec<String> = answer.detections.iter().map(|d| d.class_name.clone()).collect();
        classes.sort();
        classes.dedup();
        Self { detections: Some(answer.count as u64), classes }
    }

    /// Count `answer`'s detections and classes in too (a batch's summary is its answers').
    pub fn add(&mut self, answer: &DetectResponse) {
        let other = Self::of(answer);
        self.detections = Some(self.detections.unwrap_or(0) + answer.count as u64);
        self.classes.extend(other.classes);
        self.classes.sort();
        self.classes.dedup();
    }

    /// The value of [`CLASSES_HEADER`].
    pub fn classes_header(&self) -> String {
        let names: Vec<String> =
            self.classes.iter().map(|c| percent_encoding::utf8_percent_encode(c, ESCAPED).to_string()).collect();
        names.join(",")
    }

    /// The summary the two headers carry (either may be absent: an answer other than
    /// `/detect`'s has neither).
    pub fn from_headers(detections: Option<&str>, classes: Option<&str>) -> Self {
        let classes = classes
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.split(',').map(|n| percent_encoding::percent_decode_str(n).decode_utf8_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        Self { detections: detections.and_then(|d| d.trim().parse().ok()), classes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_of_any_kind_survive_the_header() {
        let summary = Summary {
            detections: Some(3),
            classes: vec!["dining table".into(), "Kaffeetasse, groß".into(), "人".into()],
        };
        let header = summary.classes_header();
        assert!(header.is_ascii() && header.split(',').count() == 3, "{header}");
        assert_eq!(Summary::from_headers(Some("3"), Some(&header)), summary);
        assert_eq!(Summary::from_headers(None, None), Summary::default());
        assert_eq!(Summary::from_headers(Some("0"), Some("")), Summary { detections: Some(0), classes: vec![] });
    }
}
