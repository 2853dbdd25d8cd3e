//! A tiny command-line parser: the three subcommands need a handful of flags each,
//! which does not justify a parsing crate in a crate that mostly ships as a SQLite
//! extension.
//!
//! Flags are accepted with one dash or two (`-o`, `-txid`, `--txid`), as Litestream's Go
//! `flag` package and GNU-style tools spell them, and a value either as the next
//! argument or after `=`. `--` ends the flags.

/// One flag a command accepts: its spellings (the first is the name the command asks
/// for) and whether it takes a value.
#[derive(Clone, Copy)]
pub struct Flag {
    pub names: &'static [&'static str],
    pub value: bool,
}

/// What [`parse`] found.
#[derive(Debug, Default)]
pub struct Parsed {
    /// (canonical name, value) in command-line order.
    flags: Vec<(&'static str, Option<String>)>,
    pub positional: Vec<String>,
}

impl Parsed {
    /// True if the flag was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }

    /// The flag's value; the last one wins when it is repeated.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The flag's value parsed as a number.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.value(name)
            .map(|v| v.parse().map_err(|_| format!("-{name} wants a number, not {v:?}")))
            .transpose()
    }
}

/// Splits `args` (without the program and command names) into flags and positionals.
pub fn parse(args: &[String], known: &[Flag]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.positional.extend(it.by_ref().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            out.positional.push(arg.clone());
            continue;
        };
        if body.is_empty() {
            // A lone "-" is a positional argument (conventionally stdin); none of ours.
            out.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let flag = known
            .iter()
            .find(|f| f.names.contains(&name))
            .ok_or_else(|| format!("unknown flag {arg}"))?;
        let value = match (flag.value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => Some(it.next().cloned().ok_or_else(|| format!("{arg} needs a value"))?),
            (false, Some(_)) => return Err(format!("{arg}: -{name} takes no value")),
            (false, None) => None,
        };
        out.flags.push((flag.names[0], value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag {
            names: &["o", "output"],
            value: true,
        },
        Flag {
            names: &["overwrite", "force"],
            value: false,
        },
    ];

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_dash_styles_and_inline_values_are_accepted() {
        let p = parse(&strings(&["-o", "a.db", "--force", "s3://b/p"]), FLAGS).unwrap();
        assert_eq!(p.value("o"), Some("a.db"));
        assert!(p.has("overwrite"));
        assert_eq!(p.positional, ["s3://b/p"]);
        let p = parse(&strings(&["--output=b.db", "x", "-o=c.db"]), FLAGS).unwrap();
        assert_eq!(p.value("o"), Some("c.db"), "the last value wins");
        assert_eq!(p.positional, ["x"]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse(&strings(&["--txid", "5"]), FLAGS).unwrap_err();
        assert_eq!(err, "unknown flag --txid");
        assert_eq!(parse(&strings(&["-o"]), FLAGS).unwrap_err(), "-o needs a value");
        assert!(parse(&strings(&["--force=yes"]), FLAGS)
            .unwrap_err()
            .contains("takes no value"));
    }

    #[test]
    fn a_double_dash_ends_the_flags() {
        let p = parse(&strings(&["--", "-o"]), FLAGS).unwrap();
        assert_eq!(p.positional, ["-o"]);
        assert!(!p.has("o"));
    }
}
