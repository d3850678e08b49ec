//! Reading `deploy/Containerfile`: its instructions, the last of a kind, its ENV and HEALTHCHECK.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use yolo_edge_tests::repo;

/// The Containerfile's instructions: (keyword in upper case, the rest), continuation lines
/// joined and comments left out.
pub(crate) fn containerfile() -> &'static [(String, String)] {
    static INSTRUCTIONS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    INSTRUCTIONS.get_or_init(|| {
        let text = std::fs::read_to_string(repo().join("deploy/Containerfile")).expect("deploy/Containerfile");
        let mut out = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let (keyword, rest) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                    out.push((keyword.to_uppercase(), rest.trim().to_owned()));
                    current.clear();
                }
            }
        }
        assert!(current.is_empty(), "the Containerfile ends inside a continued line");
        out
    })
}

pub(crate) fn instructions(keyword: &str) -> Vec<&'static str> {
    containerfile().iter().filter(|(k, _)| k == keyword).map(|(_, r)| r.as_str()).collect()
}

/// The last `keyword` instruction (the one that counts), which must be in JSON (exec) form.
pub(crate) fn exec_form(keyword: &str) -> Vec<String> {
    let all = instructions(keyword);
    let last = all.last().unwrap_or_else(|| panic!("the Containerfile has no {keyword}"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{keyword} {last} is not the JSON exec form: {e}"))
}

/// The HEALTHCHECK's command, in exec form.
pub(crate) fn healthcheck() -> Vec<String> {
    let all = instructions("HEALTHCHECK");
    let check = all.last().expect("the Containerfile has a HEALTHCHECK");
    let (_, command) = check.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
    serde_json::from_str(command.trim()).expect("the HEALTHCHECK command in JSON exec form")
}

/// The `ENV` variables the runtime stage sets (`ENV A=1 B=2` form).
pub(crate) fn image_env() -> BTreeMap<String, String> {
    let froms = containerfile().iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    containerfile()[froms..]
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair:?}: write ENV NAME=value"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}
