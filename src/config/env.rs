//! `${VAR}` and `${VAR:-default}` expansion, and scrubbing the substituted values out
//! of error messages.

use super::ConfigError;

/// Expands `${VAR}`, `${VAR:-default}` (the default when `VAR` is unset or empty, as in
/// a shell) and `$$` in `value`, remembering values taken from the environment as
/// secrets.
pub(crate) fn expand(
    value: &str,
    alias: &str,
    key: &'static str,
    secrets: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(ConfigError::Invalid {
                    alias: alias.to_owned(),
                    key,
                    reason: "has a `${` without its closing `}` (write `$$` for a literal `$`)"
                        .into(),
                });
            };
            let (var, default) = match tail[..end].split_once(":-") {
                Some((var, default)) => (var, Some(default)),
                None => (&tail[..end], None),
            };
            let valid = var.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
            if var.is_empty() || !valid {
                return Err(ConfigError::Invalid {
                    alias: alias.to_owned(),
                    key,
                    reason: format!("has an invalid variable name `${{{var}}}`"),
                });
            }
            let set = std::env::var_os(var).filter(|v| !(default.is_some() && v.is_empty()));
            match (set, default) {
                (Some(val), _) => {
                    let val = val.into_string().map_err(|_| ConfigError::Invalid {
                        alias: alias.to_owned(),
                        key,
                        reason: format!("uses ${{{var}}}, whose value is not valid UTF-8"),
                    })?;
                    if !val.is_empty() {
                        secrets.push(val.clone());
                    }
                    out.push_str(&val);
                }
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ConfigError::MissingVariable {
                        alias: alias.to_owned(),
                        key,
                        var: var.to_owned(),
                    });
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` with every secret (and its URL-encoded form) replaced by `***`.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        for form in [secret.clone(), percent_encode(secret)] {
            if !form.is_empty() && out.contains(&form) {
                out = out.replace(&form, "***");
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        // SAFETY: `set_var` is unsound while another thread reads the environment
        // without std's lock (libc's own `getenv`, in `getaddrinfo` or time-zone code);
        // std's `var` and `set_var` are serialized with each other, and the unit tests
        // resolve no host names and read no time zones.
        unsafe { std::env::set_var("STICKYPOOL_CONFIG_TEST_PW", "p@ss word") };
        let mut secrets = Vec::new();
        let out = expand(
            "mysql://u:${STICKYPOOL_CONFIG_TEST_PW}@h/$$x$y",
            "main",
            "url",
            &mut secrets,
        )
        .unwrap();
        assert_eq!(out, "mysql://u:p@ss word@h/$x$y");
        assert_eq!(secrets, vec!["p@ss word".to_owned()]);
        assert_eq!(
            redact("bad url mysql://u:p%40ss%20word@h and p@ss word", &secrets),
            "bad url mysql://u:***@h and ***"
        );
        let err = expand(
            "${STICKYPOOL_CONFIG_TEST_UNSET}",
            "main",
            "url",
            &mut secrets,
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::MissingVariable { ref var, .. } if var == "STICKYPOOL_CONFIG_TEST_UNSET")
        );
        assert!(expand("${oops", "a", "url", &mut secrets).is_err());
        // Defaults, as in a shell: when unset or empty; a set value wins.
        let mut defaults = Vec::new();
        let out = expand(
            "redis://${STICKYPOOL_CONFIG_TEST_UNSET:-127.0.0.1}:${STICKYPOOL_CONFIG_TEST_PW:-x}/",
            "main",
            "url",
            &mut defaults,
        )
        .unwrap();
        assert_eq!(out, "redis://127.0.0.1:p@ss word/");
        assert_eq!(defaults, ["p@ss word"], "a default is no secret");
        assert_eq!(
            expand(
                "${STICKYPOOL_CONFIG_TEST_UNSET:-}",
                "a",
                "url",
                &mut defaults
            )
            .unwrap(),
            ""
        );
        assert!(expand("${:-x}", "a", "url", &mut defaults).is_err());
        assert!(expand("${1X}", "a", "url", &mut secrets).is_err());
        assert!(expand("${}", "a", "url", &mut secrets).is_err());
    }
}
