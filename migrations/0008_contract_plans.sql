-- Enterprise and other custom terms. After an enquiry, staff set a plan up for one customer: any
-- plan, usually one they created for that customer under Plans & prices and left off the public
-- plans page (not purchasable). The offer is a bank-transfer subscription order that the customer
-- pays like any other and staff confirm; `offered_by` records who set it up (also in the audit
-- log). The subscription it starts is `by_contract`: it renews on its plan although that plan is
-- not for sale, where a self-service subscription ends at renewal once its plan is withdrawn.
ALTER TABLE orders ADD COLUMN offered_by UUID REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE subscriptions ADD COLUMN by_contract BOOLEAN NOT NULL DEFAULT false;
