//! `${VAR}` interpolation of environment variables in topology files.
//!
//! Interpolation is textual and happens before YAML parsing (as in Vector), so a variable can
//! supply any value, numbers included. `${VAR:-default}` gives a default, `$$` is a literal `$`.
//! Whole-line comments are left alone so a commented-out setting cannot fail validation.

use super::ConfigError;

/// Replaces every `${VAR}` in `text`, looking variables up with `lookup`. Collects one error per
/// unset variable or malformed reference, naming the line.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<ConfigError>) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        interpolate_line(line, index + 1, lookup, errors, &mut out);
    }
    out
}

fn interpolate_line(
    line: &str,
    line_number: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
    out: &mut String,
) {
    let location = format!("line {line_number}");
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            errors.push(ConfigError::new(
                &location,
                "unterminated `${` (write `$$` for a literal `$`)",
            ));
            out.push_str(&rest[dollar..]);
            return;
        };
        let reference = &body[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if !is_variable_name(name) {
            errors.push(ConfigError::new(
                &location,
                format!("`${{{reference}}}` is not a valid variable reference"),
            ));
        } else {
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(ConfigError::new(
                    &location,
                    format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                    ),
                )),
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (String, Vec<String>) {
        let lookup = |name: &str| (name == "SET").then(|| "value".to_owned());
        let mut errors = Vec::new();
        let out = interpolate(text, &lookup, &mut errors);
        (out, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        assert_eq!(run("a: ${SET}\nb: ${UNSET:-d}\n").0, "a: value\nb: d\n");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(run("a: $${SET} $5\n").0, "a: ${SET} $5\n");
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let (_, errors) = run("a: ${A}\n# ${IGNORED}\nb: ${B} ${SET}\n");
        assert_eq!(
            errors,
            vec![
                "line 1: environment variable `A` is not set (write `${A:-default}` to give a default)",
                "line 3: environment variable `B` is not set (write `${B:-default}` to give a default)",
            ]
        );
    }

    #[test]
    fn reports_malformed_references() {
        let (_, errors) = run("a: ${1X}\nb: ${OPEN\n");
        assert_eq!(
            errors,
            vec![
                "line 1: `${1X}` is not a valid variable reference",
                "line 2: unterminated `${` (write `$$` for a literal `$`)",
            ]
        );
    }
}
