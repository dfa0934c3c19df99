//! Simplified Chinese and English. English text is the key: call sites read `t("API keys")`,
//! and `zh` maps each English string to its Chinese. A string missing from the table shows in
//! English. The language is chosen on the server (cookie, then the browser's Accept-Language;
//! a signed-in user's saved choice is put in the cookie at sign-in) and written to
//! `<html lang>`, which the browser reads back when hydrating, so both sides render alike.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Display;

pub const COOKIE: &str = "cloudrouter_lang";

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

impl Lang {
    /// Parses an Accept-Language header (or a single tag): the most preferred supported
    /// language wins; anything else is English.
    pub fn from_tag(header: &str) -> Lang {
        let mut tags: Vec<(f32, usize, &str)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut bits = part.split(';');
                let tag = bits.next()?.trim();
                let q = bits
                    .find_map(|b| b.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                    .unwrap_or(1.0);
                (!tag.is_empty() && q > 0.0).then_some((q, i, tag))
            })
            .collect();
        tags.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        tags.iter().find_map(|(_, _, tag)| Lang::parse(tag)).unwrap_or_default()
    }

    /// One tag ("zh-CN", "en", "zh", "en-GB"), if supported.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The value for `<html lang>`.
    pub fn html_tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The value stored in the cookie and on the account.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The language of the request being served (server) or of the page (browser).
    pub fn detect() -> Lang {
        #[cfg(feature = "ssr")]
        {
            from_request()
        }
        #[cfg(not(feature = "ssr"))]
        {
            document()
                .document_element()
                .and_then(|e| e.get_attribute("lang"))
                .and_then(|l| Lang::parse(&l))
                .unwrap_or_default()
        }
    }
}

/// On the server: the `cloudrouter_lang` cookie, else Accept-Language, else English.
#[cfg(feature = "ssr")]
pub fn from_request() -> Lang {
    let Some(parts) = use_context::<http::request::Parts>() else { return Lang::En };
    let cookie = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).and_then(Lang::parse));
    cookie.unwrap_or_else(|| {
        parts
            .headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Lang::from_tag)
            .unwrap_or_default()
    })
}

#[cfg(not(feature = "ssr"))]
thread_local! {
    static PAGE_LANG: std::cell::Cell<Option<Lang>> = const { std::cell::Cell::new(None) };
}

/// Makes `lang` the current language for everything rendered below (called once, in `App`).
pub fn provide_lang(lang: Lang) {
    #[cfg(not(feature = "ssr"))]
    PAGE_LANG.with(|l| l.set(Some(lang)));
    provide_context(lang);
}

/// The current language.
pub fn lang() -> Lang {
    if let Some(l) = use_context::<Lang>() {
        return l;
    }
    #[cfg(feature = "ssr")]
    {
        from_request()
    }
    #[cfg(not(feature = "ssr"))]
    {
        PAGE_LANG.with(|l| l.get()).unwrap_or_else(Lang::detect)
    }
}

/// A fixed English string in the current language.
pub fn t(en: &'static str) -> &'static str {
    match lang() {
        Lang::En => en,
        Lang::Zh => zh(en).unwrap_or(en),
    }
}

/// Any English string (e.g. one that came from the server) in the current language.
pub fn tr(en: &str) -> String {
    match lang() {
        Lang::En => en.to_string(),
        Lang::Zh => zh(en).map(str::to_string).unwrap_or_else(|| en.to_string()),
    }
}

/// A translated template with `{}` placeholders filled in order: `tf("Key “{}” created.", &[&name])`.
pub fn tf(en: &'static str, args: &[&dyn Display]) -> String {
    let template = t(en);
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut rest = template;
    while let Some(i) = rest.find("{}") {
        out.push_str(&rest[..i]);
        if let Some(a) = args.next() {
            out.push_str(&a.to_string());
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// A code stored in the database — a status ("paid"), a kind ("topup"), a payment method, a
/// ledger source, a request outcome, an audit action — as words in the current language. Codes
/// that already read as English are their own key in the table; the others get English words
/// here first (the payment methods' words are the ones the core crate writes into ledger notes).
pub fn label(code: &str) -> String {
    tr(match code {
        "created" => "awaiting payment",
        "topup" => "top-up",
        "alipay" => "Alipay",
        "wechat" => "WeChat Pay",
        "bank" => "bank transfer",
        "sandbox" => "sandbox payment",
        "redeem_code" => "redeem code",
        "wallet" => "balance",
        "trial" => "trial credit",
        "allowance" => "plan allowance",
        "upstream_error" => "upstream error",
        "gateway_error" => "gateway error",
        "upstream_cut" => "upstream cut off",
        "client_closed" => "client closed",
        "idle_timeout" => "idle timeout",
        "reversal_due" => "reversal due",
        "shutdown" => "cut by a restart",
        code => code,
    })
}

include!("i18n_zh.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_first_supported() {
        assert_eq!(Lang::from_tag("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_tag("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(Lang::from_tag("fr-FR,zh-TW;q=0.5"), Lang::Zh);
        assert_eq!(Lang::from_tag("en;q=0.5,zh;q=0.9"), Lang::Zh);
        assert_eq!(Lang::from_tag("fr,de"), Lang::En);
        assert_eq!(Lang::from_tag(""), Lang::En);
    }

    /// Every literal the console passes to `t` or `tf`, read from its source files.
    fn shown_strings() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = vec![];
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut found = vec![];
        // the table itself holds Chinese, not calls
        files.retain(|f| !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("i18n_zh")));
        for file in files {
            let src = std::fs::read_to_string(&file).unwrap();
            for call in ["t(\"", "tf(\""] {
                let mut rest = src.as_str();
                while let Some(at) = rest.find(call) {
                    let before = rest[..at].chars().next_back();
                    rest = &rest[at + call.len()..];
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue; // `format(` and the like
                    }
                    let mut lit = String::new();
                    let mut chars = rest.chars();
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('n') => lit.push('\n'),
                                Some(other) => lit.push(other),
                                None => {}
                            },
                            c => lit.push(c),
                        }
                    }
                    found.push((lit, file.file_name().unwrap().to_string_lossy().into_owned()));
                }
            }
        }
        found
    }

    #[test]
    fn every_string_the_console_shows_has_its_chinese() {
        let shown = shown_strings();
        assert!(shown.len() > 500, "the scan finds the console's strings: {}", shown.len());
        let missing: Vec<_> = shown.iter().filter(|(en, _)| zh(en).is_none()).collect();
        assert!(missing.is_empty(), "{} strings without Chinese:\n{missing:#?}", missing.len());
    }

    #[test]
    fn every_template_keeps_its_placeholders() {
        for en in shown_strings().iter().map(|(en, _)| en.as_str()) {
            if let Some(zh) = zh(en) {
                assert_eq!(en.matches("{}").count(), zh.matches("{}").count(), "{en}");
            }
        }
    }
}
