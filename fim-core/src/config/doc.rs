//! The spanned TOML document being read: lines of byte offsets, and tables that know
//! which of their keys were used.

use super::*;

/// The document's text, for turning byte offsets into lines.
pub(super) struct Doc {
    line_starts: Vec<usize>,
}

impl Doc {
    pub(super) fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { line_starts }
    }

    /// 1-based line of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1)
    }

    pub(super) fn error(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            line: self.line(span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A table being read: which keys were used, so the others can be reported.
pub(super) struct Table<'a, 'i> {
    pub(super) doc: &'a Doc,
    /// Dotted name of the table ("" for the top).
    pub(super) name: String,
    pub(super) entries: &'a DeTable<'i>,
    pub(super) used: Vec<&'a str>,
    /// Where the table starts (for problems with no key of their own).
    pub(super) line: usize,
}

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

impl<'a, 'i> Table<'a, 'i> {
    pub(super) fn new(doc: &'a Doc, name: &str, entries: &'a DeTable<'i>, line: usize) -> Self {
        Self {
            doc,
            name: name.to_owned(),
            entries,
            used: Vec::new(),
            line,
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| k.get_ref().as_ref() == key)
    }

    pub(super) fn take(&mut self, key: &'a str) -> Option<&'a Value<'i>> {
        let found = self
            .entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v);
        if found.is_some() {
            self.used.push(key);
        }
        found
    }

    pub(super) fn table(
        &mut self,
        key: &'a str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Table<'a, 'i>> {
        let value = self.take(key)?;
        let name = self.key(key);
        match value.get_ref() {
            DeValue::Table(t) => Some(Table::new(
                self.doc,
                &name,
                t,
                self.doc.line(value.span().start),
            )),
            _ => {
                errors.push(self.doc.error(&name, value.span(), "must be a table"));
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        key: &'a str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<(String, Range<usize>)> {
        let value = self.take(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), value.span())),
            _ => {
                errors.push(
                    self.doc
                        .error(&self.key(key), value.span(), "must be a string"),
                );
                None
            }
        }
    }

    /// An array of strings, each checked by `check`; problems are recorded and the bad
    /// items left out. A missing key is an empty list.
    pub(super) fn strings(
        &mut self,
        key: &'a str,
        errors: &mut Vec<ConfigError>,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let Some(value) = self.take(key) else {
            return Vec::new();
        };
        let name = self.key(key);
        let DeValue::Array(items) = value.get_ref() else {
            errors.push(
                self.doc
                    .error(&name, value.span(), "must be an array of strings"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{name}[{}]", i + 1);
            match item.get_ref() {
                DeValue::String(s) => match check(s) {
                    Ok(()) => out.push(s.to_string()),
                    Err(m) => errors.push(self.doc.error(&key, item.span(), m)),
                },
                _ => errors.push(self.doc.error(&key, item.span(), "must be a string")),
            }
        }
        out
    }

    /// The table's keys, in the file's order.
    pub(super) fn keys(&self) -> Vec<&'a str> {
        self.entries
            .iter()
            .map(|(k, _)| k.get_ref().as_ref())
            .collect()
    }

    /// Whether `key` was read.
    pub(super) fn was_used(&self, key: &str) -> bool {
        self.used.contains(&key)
    }

    /// A problem with the table as a whole, at its first line.
    pub(super) fn error_here(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: self.line,
            key: self.name.clone(),
            message: message.into(),
        }
    }

    /// A problem with the value of `key`, at `span`.
    pub(super) fn error_at(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.doc.error(&self.key(key), span, message)
    }

    /// Every key that was not used is an error.
    pub(super) fn finish(self, errors: &mut Vec<ConfigError>) {
        for (k, _) in self.entries.iter() {
            let name: &str = k.get_ref().as_ref();
            if !self.used.contains(&name) {
                errors.push(self.doc.error(&self.key(name), k.span(), "unknown key"));
            }
        }
    }
}
