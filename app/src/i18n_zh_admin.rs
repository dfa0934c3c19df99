// More of the Chinese table: the staff pages (issue #18), included by `i18n_zh_console.rs` and
// looked up when neither earlier table has an entry. Keep `{}` placeholders in step.

fn zh_admin(en: &str) -> Option<&'static str> {
    #[allow(clippy::match_single_binding, unreachable_code)]
    Some(match en {
        _ => return zh_redeem(en),
    })
}

include!("i18n_zh_redeem.rs");
