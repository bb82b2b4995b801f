//! Memory blocks: the searchable units of a git memory file. A block is the text between a
//! line starting `/START` and the next line starting `/END` (the original matched `/end`
//! anywhere, so a URL such as `…/endpoint` cut blocks short). `[ALWAYS_LOAD]` in a block makes
//! it a core block; `[Strength: High|Medium|Low]` in its first `###` heading weights its
//! score. Text outside blocks is not indexed.

/// How much a block's search score is multiplied by.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Strength {
    High,
    Medium,
    Low,
}

impl Strength {
    pub fn weight(self) -> f64 {
        match self {
            Strength::High => 1.5,
            Strength::Medium => 1.2,
            Strength::Low => 1.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strength::High => "High",
            Strength::Medium => "Medium",
            Strength::Low => "Low",
        }
    }

    /// The strength a `### …` heading names; `Low` when it names none.
    fn of_heading(heading: &str) -> Strength {
        let Some(start) = heading.find("[Strength:") else { return Strength::Low };
        let rest = &heading[start + "[Strength:".len()..];
        let value = rest.split(']').next().unwrap_or_default().trim();
        match value.to_ascii_lowercase().as_str() {
            "high" => Strength::High,
            "medium" => Strength::Medium,
            _ => Strength::Low,
        }
    }
}

/// One block of a memory file.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// 0-based position among the file's blocks.
    pub ordinal: usize,
    /// The first `###` heading inside the block, without the hashes.
    pub heading: Option<String>,
    /// The lines between the markers.
    pub text: String,
    pub always_load: bool,
    pub strength: Strength,
}

pub const ALWAYS_LOAD: &str = "[ALWAYS_LOAD]";

fn is_marker(line: &str, marker: &str) -> bool {
    line.trim_start().starts_with(marker)
}

/// The blocks of `markdown`, in order. A `/START` with no `/END` runs to the end of the file.
pub fn parse_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if is_marker(line, "/START") => current = Some(Vec::new()),
            None => {}
            Some(lines) if is_marker(line, "/END") => {
                blocks.push(block(blocks.len(), lines));
                current = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    if let Some(lines) = current {
        blocks.push(block(blocks.len(), &lines));
    }
    blocks
}

fn block(ordinal: usize, lines: &[&str]) -> Block {
    let text = lines.join("\n").trim().to_string();
    let heading = lines
        .iter()
        .map(|line| line.trim_start())
        .find(|line| line.starts_with("###"))
        .map(|line| line.trim_start_matches('#').trim().to_string());
    let strength = heading.as_deref().map(Strength::of_heading).unwrap_or(Strength::Low);
    Block { ordinal, always_load: text.contains(ALWAYS_LOAD), heading, text, strength }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_the_text_between_line_markers() {
        let file = "# Alex\nintro text, not indexed\n/START\n### Health [Strength: High]\nRuns 5k; see https://x.io/endpoint/docs\n[ALWAYS_LOAD]\n/END\noutside\n  /START\n### Work\nlikes /end of day\n/END\n";
        let blocks = parse_blocks(file);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].heading.as_deref(), Some("Health [Strength: High]"));
        assert!(
            blocks[0].text.contains("/endpoint/docs"),
            "a URL does not end a block: {:?}",
            blocks[0].text
        );
        assert!(blocks[0].always_load);
        assert_eq!(blocks[0].strength, Strength::High);
        assert_eq!(blocks[1].text, "### Work\nlikes /end of day", "only a line starting /END ends a block");
        assert_eq!((blocks[1].ordinal, blocks[1].always_load, blocks[1].strength), (1, false, Strength::Low));
        assert!(!blocks.iter().any(|b| b.text.contains("outside") || b.text.contains("intro")));
    }

    #[test]
    fn strengths_weigh_and_an_unclosed_block_runs_to_the_end() {
        let blocks =
            parse_blocks("/START\n### Mom [Strength: medium]\ncalls on Sundays\n/END\n/START\nno end");
        assert_eq!(blocks[0].strength.weight(), 1.2);
        assert_eq!(blocks[1].text, "no end");
        assert_eq!(Strength::of_heading("### x [Strength: Unknown]"), Strength::Low);
        assert!(parse_blocks("no markers at all").is_empty());
    }
}
