//! Command templates: a line split like a shell would (quotes, backslashes; no expansion) or an
//! argv list, with `{placeholder}`s substituted per argument.
//!
//! `{name}` with a lowercase name is a placeholder and must be one the operation knows (a typo is
//! a configuration error, not a literal). `{{` and `}}` are literal braces. Any other brace text
//! (`${LIFEBOAT_PATH}`, `{A}`) is literal, so shell scripts inside `sh -c` keep working.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One command: `"pg_ctl promote -D {target}"` or `["pg_ctl", "promote", "-D", "{target}"]`.
/// No shell runs unless the template says so (`["sh", "-c", "..."]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandTemplate {
    Line(String),
    Argv(Vec<String>),
}

/// A piece of one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Var(&'static str),
}

/// A validated template: arguments made of pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    args: Vec<Vec<Piece>>,
}

/// Values for one run: each placeholder's text, and `{chain}`'s list.
#[derive(Clone, Debug, Default)]
pub(crate) struct Vars {
    pub values: BTreeMap<&'static str, String>,
    pub chain: Vec<String>,
}

impl Vars {
    pub fn set(&mut self, name: &'static str, value: impl ToString) -> &mut Self {
        self.values.insert(name, value.to_string());
        self
    }
}

/// The placeholder that expands to several arguments when it is a whole argument.
pub(crate) const CHAIN: &str = "chain";

impl CommandTemplate {
    /// Parse and check against the placeholders the operation offers.
    pub(crate) fn parse(&self, allowed: &[&'static str]) -> Result<Parsed, String> {
        let raw = match self {
            CommandTemplate::Line(line) => split_line(line)?,
            CommandTemplate::Argv(argv) => argv.clone(),
        };
        if raw.is_empty() || raw[0].is_empty() {
            return Err("the command is empty".into());
        }
        let args = raw
            .iter()
            .map(|a| parse_arg(a, allowed))
            .collect::<Result<Vec<_>, _>>()?;
        if args[0].iter().any(|p| matches!(p, Piece::Var(CHAIN))) {
            return Err("the program itself cannot be {chain}".into());
        }
        Ok(Parsed { args })
    }
}

impl CommandTemplate {
    /// Check the template against the placeholders `allowed` and render it with `values`
    /// (unset placeholders become empty) and `chain`: the argv a run would get. The driver
    /// itself parses once and renders per run; this is the same path in one call, for
    /// `lifeboat config check`-style checks and the `site_config` fuzz target.
    pub fn expand(
        &self,
        allowed: &[&'static str],
        values: &[(&'static str, String)],
        chain: &[String],
    ) -> Result<Vec<String>, String> {
        let parsed = self.parse(allowed)?;
        let mut vars = Vars {
            chain: chain.to_vec(),
            ..Vars::default()
        };
        for (name, value) in values {
            vars.set(name, value);
        }
        Ok(parsed.render(&vars))
    }
}

impl Parsed {
    /// The argv for these values. `{chain}` as a whole argument becomes one argument per item;
    /// inside a larger argument its items are joined with spaces.
    pub fn render(&self, vars: &Vars) -> Vec<String> {
        let mut out = Vec::new();
        for arg in &self.args {
            if let [Piece::Var(CHAIN)] = arg.as_slice() {
                out.extend(vars.chain.iter().cloned());
                continue;
            }
            let mut s = String::new();
            for piece in arg {
                match piece {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Var(CHAIN) => s.push_str(&vars.chain.join(" ")),
                    Piece::Var(name) => {
                        s.push_str(vars.values.get(name).map(String::as_str).unwrap_or(""))
                    }
                }
            }
            out.push(s);
        }
        out
    }
}

fn parse_arg(arg: &str, allowed: &[&'static str]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = arg;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            text.push(c);
            rest = &rest[2..];
            continue;
        }
        if c == '{' {
            if let Some(end) = rest.find('}') {
                let name = &rest[1..end];
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    let known = allowed.iter().find(|a| **a == name).ok_or_else(|| {
                        format!(
                            "{{{name}}} is not a placeholder of this operation (it offers {})",
                            allowed
                                .iter()
                                .map(|a| format!("{{{a}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(known));
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        text.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Split a command line into arguments: whitespace separates; `'...'` is literal; `"..."` allows
/// `\"`, `\\`, `\$` and `` \` ``; a backslash outside quotes escapes the next character.
fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            '\'' => {
                in_arg = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' quote in {line:?}")),
                    }
                }
            }
            '"' => {
                in_arg = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => return Err(format!("unterminated \" quote in {line:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" quote in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_arg = true;
                match chars.next() {
                    Some(e) => cur.push(e),
                    None => return Err(format!("trailing backslash in {line:?}")),
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[&str] = &["db", "path", "lsn_end", "chain"];

    #[test]
    fn lines_split_like_a_shell_without_expansion() {
        assert_eq!(
            split_line(r#"sh -c 'echo "$1" > x' -- "a b" c\ d"#).unwrap(),
            vec!["sh", "-c", r#"echo "$1" > x"#, "--", "a b", "c d"]
        );
        assert!(split_line("echo 'open").is_err());
        assert!(split_line("echo \"open").is_err());
    }

    #[test]
    fn placeholders_substitute_within_one_argument_and_typos_are_refused() {
        let t = CommandTemplate::Line("restore --to={path} {db} {{literal}} ${HOME}".into());
        let p = t.parse(ALLOWED).unwrap();
        let mut vars = Vars::default();
        vars.set("path", "/in/a b").set("db", "sales");
        assert_eq!(
            p.render(&vars),
            vec!["restore", "--to=/in/a b", "sales", "{literal}", "${HOME}"]
        );
        let err = CommandTemplate::Line("x {lsn_ned}".into())
            .parse(ALLOWED)
            .unwrap_err();
        assert!(
            err.contains("{lsn_ned}") && err.contains("{lsn_end}"),
            "{err}"
        );
    }

    #[test]
    fn chain_expands_to_one_argument_per_artifact() {
        let t = CommandTemplate::Argv(vec!["drill".into(), "{chain}".into(), "x{chain}".into()]);
        let p = t.parse(ALLOWED).unwrap();
        let vars = Vars {
            chain: vec!["a".into(), "b".into()],
            ..Vars::default()
        };
        assert_eq!(p.render(&vars), vec!["drill", "a", "b", "xa b"]);
    }
}
