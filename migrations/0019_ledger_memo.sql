-- Why a subscription ended is a code too (`EndReason`), no longer English words.
UPDATE subscriptions SET end_reason = CASE end_reason
    WHEN 'renewal not paid' THEN 'renewal_not_paid'
    WHEN 'refund requested' THEN 'refund_requested'
    WHEN 'plan no longer offered' THEN 'plan_withdrawn'
    ELSE end_reason END
WHERE end_reason IS NOT NULL;

-- Ledger rows say what they are for as a code with typed values (`memo`, see `Memo` in
-- server/core/src/billing/ledger.rs), which the console words in the reader's language; `note`
-- keeps the English wording. Rows written before this migration are given their memo from the
-- English note they carry (the exact phrasings the code wrote); a note that matches none (API
-- usage rows, staff text) stays memo-less or becomes a staff memo.
ALTER TABLE ledger_entries ADD COLUMN memo JSONB;

UPDATE ledger_entries SET memo = CASE
    WHEN m[1] = 'topup' OR m[1] = 'payment' THEN jsonb_build_object('code', m[1], 'order', m[2], 'method',
        CASE m[3] WHEN 'Alipay' THEN 'alipay' WHEN 'WeChat Pay' THEN 'wechat' WHEN 'bank transfer' THEN 'bank'
                  WHEN 'sandbox payment' THEN 'sandbox' ELSE 'balance' END)
    WHEN m[1] IN ('subscription', 'renewal') THEN jsonb_build_object('code', m[1], 'plan', m[2], 'order', m[3])
    WHEN m[1] = 'refund' THEN jsonb_build_object('code', 'refund', 'order', m[2], 'plan', m[3])
    WHEN m[1] = 'trial_granted' THEN jsonb_build_object('code', m[1], 'until',
        to_char((m[2] || ':00+00')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
    WHEN m[1] = 'allowance_granted' THEN jsonb_build_object('code', m[1], 'plan', m[2], 'cycle_start', m[3])
    WHEN m[1] = 'allowance_removed' THEN jsonb_build_object('code', m[1], 'reason',
        CASE m[2] WHEN 'refunded' THEN 'refunded' WHEN 'renewal not paid' THEN 'renewal_not_paid'
                  WHEN 'refund requested' THEN 'refund_requested' ELSE 'plan_withdrawn' END)
    ELSE jsonb_build_object('code', m[1])
END
FROM (
    SELECT id AS row_id, CASE
        WHEN note ~ '^Top-up (\S+) via (.+)$' THEN ARRAY['topup'] || regexp_match(note, '^Top-up (\S+) via (.+)$')
        WHEN note ~ '^Payment (\S+) via (.+)$' THEN ARRAY['payment'] || regexp_match(note, '^Payment (\S+) via (.+)$')
        WHEN note ~ '^(.+) plan subscription \(order (\S+)\)$' THEN ARRAY['subscription'] || regexp_match(note, '^(.+) plan subscription \(order (\S+)\)$')
        WHEN note ~ '^(.+) plan renewal \(order (\S+)\)$' THEN ARRAY['renewal'] || regexp_match(note, '^(.+) plan renewal \(order (\S+)\)$')
        WHEN note ~ '^Refund of order (\S+) \((.+) plan\) to balance$' THEN ARRAY['refund'] || regexp_match(note, '^Refund of order (\S+) \((.+) plan\) to balance$')
        WHEN note ~ '^Trial credit, valid until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$' THEN ARRAY['trial_granted'] || regexp_match(note, '^Trial credit, valid until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$')
        WHEN note = 'Unused trial credit expired' THEN ARRAY['trial_expired']
        WHEN note ~ '^(.+) plan allowance \(USD list price\) for the cycle starting (\d{4}-\d\d-\d\d)$' THEN ARRAY['allowance_granted'] || regexp_match(note, '^(.+) plan allowance \(USD list price\) for the cycle starting (\d{4}-\d\d-\d\d)$')
        WHEN note = 'Unused plan allowance of the ended cycle' THEN ARRAY['allowance_lapsed']
        WHEN note ~ '^Plan allowance removed: (.+)$' THEN ARRAY['allowance_removed'] || regexp_match(note, '^Plan allowance removed: (.+)$')
    END AS m
    FROM ledger_entries
) parsed
WHERE parsed.row_id = ledger_entries.id AND parsed.m IS NOT NULL;

-- Staff rows (credits, debits, corrections by hand) keep their text as typed.
UPDATE ledger_entries SET memo = jsonb_build_object('code', 'staff', 'text',
        CASE WHEN note IN ('Credit from CloudRouter support', 'Correction by CloudRouter support') THEN NULL ELSE note END)
WHERE memo IS NULL AND kind IN ('credit', 'debit', 'adjustment');
