// More of the Chinese table (issue #18's console work), included by `i18n_zh.rs`: looked up when
// the main table has no entry. Keep `{}` placeholders in step.

fn zh_console(en: &str) -> Option<&'static str> {
    Some(match en {
        "Times are shown in {}." => "时间均按 {} 显示。",
        "Change" => "更改",
        "Time zone" => "时区",
        "Every time in the console — the request log, its date filter, charts, CSV exports and the ledger — is shown in this zone." => "控制台中的所有时间 —— 请求日志、日期筛选、图表、CSV 导出和账单流水 —— 都按此时区显示。",
        "Automatic: {}" => "自动：{}",
        "Save time zone" => "保存时区",
        "Time zone saved." => "时区已保存。",
        "That is not a time zone we know." => "无法识别该时区。",
        "That is not a request id." => "这不是有效的请求 ID。",
        _ => return None,
    })
}
