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
        "The file is not a PDF. Choose the invoice's PDF file (or none)." => "该文件不是 PDF。请选择发票的 PDF 文件（也可不上传）。",
        "Give the issue date." => "请填写开票日期。",
        "Give the invoice number (up to 64 characters)." => "请填写发票号码（最多 64 个字符）。",
        "This invoice can no longer be issued: it was decided already, or its order was refunded." => "该发票已无法开具：它已被处理，或其订单已退款。",
        "The upload did not arrive whole (a PDF may be at most 10 MB). Try again." => "上传未完整送达（PDF 最大 10 MB）。请重试。",
        "1. Give your account something to spend" => "1. 让账号有可用额度",
        "2. Create a key" => "2. 创建 API 密钥",
        "3. Call Claude" => "3. 调用 Claude",
        "4. Know what it costs" => "4. 了解费用",
        "Until step 1 is done these calls are refused with 402 (insufficient balance): the balance is {} and there is no plan or trial credit." => "完成第 1 步之前，这些调用会被拒绝并返回 402（余额不足）：当前余额为 {}，且没有套餐或试用额度。",
        "Ready: calls can be paid for." => "已就绪：调用可以正常扣费。",
        "Trial credit approved: {} of {} left, until {}." => "试用额度已批准：{} 中剩余 {}，有效期至 {}。",
        "Applied: your trial application is waiting for our staff, usually within a working day. This page shows the credit once it is approved." => "已申请：你的试用申请正在等待工作人员审核，通常在一个工作日内完成。批准后额度会显示在这里。",
        "Your trial application was declined; top up to start." => "你的试用申请未获批准；请充值后开始使用。",
        "Your trial credit has expired; top up to continue." => "你的试用额度已过期；请充值后继续使用。",
        "Your balance is {} and you have no plan or trial credit, so every call is refused with 402 (insufficient balance) until the account has funds. Either way below works:" => "你的余额为 {}，且没有套餐或试用额度，因此在账号有可用资金之前，所有调用都会被拒绝并返回 402（余额不足）。以下任一方式均可：",
        "Free credit for new accounts; our staff approve each application." => "新账号可申请免费额度；每份申请由工作人员审核。",
        "Top up" => "充值",
        "Pay any amount into your balance; a call draws on it at once." => "向余额充值任意金额，调用会立即从中扣费。",
        _ => return None,
    })
}
