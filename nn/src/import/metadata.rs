//! Reading what an ONNX export says about itself: Ultralytics' `names` and `imgsz` metadata,
//! an `--input-size`, and the output layout a shape means.

use yolo_core::model::OutputLayout;

/// Parse `--input-size`: `640` (square) or `WIDTHxHEIGHT`.
pub fn parse_input_size(text: &str) -> Result<(u32, u32), String> {
    let dim = |s: &str| match s.trim().parse::<u32>() {
        Ok(v) if (1..=16384).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a size in pixels (1..=16384): use 640 or 640x480 (width x height)")),
    };
    match text.split_once(['x', 'X']) {
        Some((w, h)) => Ok((dim(w)?, dim(h)?)),
        None => dim(text).map(|s| (s, s)),
    }
}

/// Parse Ultralytics' `imgsz` metadata, `[height, width]` or one number; (width, height).
pub fn parse_imgsz(text: &str) -> Option<(u32, u32)> {
    let inner = text.trim().trim_start_matches(['[', '(']).trim_end_matches([']', ')']);
    let nums: Vec<u32> = inner.split(',').map(|s| s.trim().parse().ok()).collect::<Option<_>>()?;
    match nums[..] {
        [s] if s > 0 => Some((s, s)),
        [h, w] if h > 0 && w > 0 => Some((w, h)),
        _ => None,
    }
}

/// Parse Ultralytics' `names` metadata: a Python dict literal `{0: 'person', 1: "it's"}`
/// (ids 0..n-1 in any order) or a list literal `['person', ...]`.
pub fn parse_names(text: &str) -> Result<Vec<String>, String> {
    let mut p = Literal { chars: text.trim().chars().collect(), at: 0 };
    let dict = match p.next() {
        Some('{') => true,
        Some('[') => false,
        _ => return Err("expected a dict {0: 'name', ...} or a list ['name', ...]".to_owned()),
    };
    let close = if dict { '}' } else { ']' };
    let mut entries: Vec<(usize, String)> = Vec::new();
    loop {
        p.skip_space();
        if p.peek() == Some(close) {
            p.at += 1;
            break;
        }
        let id = if dict {
            let id = p.integer()?;
            p.skip_space();
            if p.next() != Some(':') {
                return Err(format!("expected ':' after id {id}"));
            }
            p.skip_space();
            id
        } else {
            entries.len()
        };
        entries.push((id, p.string()?));
        p.skip_space();
        match p.next() {
            Some(',') => {}
            Some(c) if c == close => break,
            other => return Err(format!("expected ',' or '{close}', found {other:?}")),
        }
    }
    p.skip_space();
    if p.at != p.chars.len() {
        return Err("text after the closing bracket".to_owned());
    }
    entries.sort_by_key(|(id, _)| *id);
    if let Some((i, (id, _))) = entries.iter().enumerate().find(|(i, (id, _))| i != id) {
        return Err(format!("class ids must be 0..{} without gaps or repeats; id {id} is at place {i}", entries.len()));
    }
    Ok(entries.into_iter().map(|(_, name)| name).collect())
}

/// A cursor over a Python literal.
struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn integer(&mut self) -> Result<usize, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let digits: String = self.chars[start..self.at].iter().collect();
        digits.parse().map_err(|_| format!("expected a class id at character {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.next() {
            Some(q @ ('\'' | '"')) => q,
            other => return Err(format!("expected a quoted name, found {other:?}")),
        };
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("a name is not closed".to_owned()),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('x') => {
                        let hex: String = (0..2).filter_map(|_| self.next()).collect();
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(c.ok_or_else(|| format!("bad escape \\x{hex}"))?);
                    }
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| self.next()).collect();
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(c.ok_or_else(|| format!("bad escape \\u{hex}"))?);
                    }
                    Some(c) => out.push(c),
                    None => return Err("a name ends in a backslash".to_owned()),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// The layout and class count an output shape `[1, a, b]` means: `[1, N, 5 + C]` with
/// N > 5 + C is YOLOv5 (objectness), `[1, 4 + C, N]` with N > 4 + C is YOLOv8/v11.
pub fn detect_layout(dims: &[u32]) -> Result<(OutputLayout, usize, usize), String> {
    let not_detection = || {
        format!(
            "the output has shape {dims:?}, which is not a YOLO detection output: a detection model answers \
             [1, N, 5 + C] (YOLOv5: boxes, objectness, C class scores) or [1, 4 + C, N] (YOLOv8/v11); \
             classification, segmentation and pose models cannot be imported"
        )
    };
    let [1, a, b] = *dims else { return Err(not_detection()) };
    let (a, b) = (a as usize, b as usize);
    if a > b && b > 5 {
        Ok((OutputLayout::Yolov5, b - 5, a))
    } else if b > a && a > 4 {
        Ok((OutputLayout::Yolov8, a - 4, b))
    } else {
        Err(not_detection())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_ultralytics_form() {
        assert_eq!(parse_names("{0: 'person', 1: 'bicycle'}").unwrap(), ["person", "bicycle"]);
        assert_eq!(parse_names("{1: \"it's\", 0: 'a\\'b'}").unwrap(), ["a'b", "it's"]);
        assert_eq!(parse_names("['x', \"y\" ,]").unwrap(), ["x", "y"]);
        assert_eq!(parse_names("{}").unwrap(), Vec::<String>::new());
        assert!(parse_names("{0: 'a', 2: 'c'}").unwrap_err().contains("without gaps"));
        assert!(parse_names("{0: 'a'").is_err());
        assert!(parse_names("person, bicycle").is_err());
        assert!(parse_names("{0: 'a'} extra").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_input_size("640"), Ok((640, 640)));
        assert_eq!(parse_input_size("640x480"), Ok((640, 480)));
        assert!(parse_input_size("0").is_err());
        assert!(parse_input_size("big").is_err());
        assert_eq!(parse_imgsz("[480, 640]"), Some((640, 480)));
        assert_eq!(parse_imgsz("640"), Some((640, 640)));
        assert_eq!(parse_imgsz("[1, 2, 3]"), None);
    }

    #[test]
    fn layouts_from_shapes() {
        assert_eq!(detect_layout(&[1, 2535, 85]), Ok((OutputLayout::Yolov5, 80, 2535)));
        assert_eq!(detect_layout(&[1, 84, 8400]), Ok((OutputLayout::Yolov8, 80, 8400)));
        assert_eq!(detect_layout(&[1, 252, 7]), Ok((OutputLayout::Yolov5, 2, 252)));
        assert_eq!(detect_layout(&[1, 6, 84]), Ok((OutputLayout::Yolov8, 2, 84)));
        for bad in [&[1, 1000][..], &[1, 85, 85], &[2, 84, 8400], &[1, 3, 4], &[1, 116, 8400, 1]] {
            assert!(detect_layout(bad).unwrap_err().contains("not a YOLO detection output"), "{bad:?}");
        }
    }
}
