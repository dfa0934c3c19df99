//! Corporate bank transfer: instructions to the customer; staff confirm receipt.

use super::*;

#[derive(Debug, Clone)]
pub struct BankTransfer {
    pub bank_name: String,
    pub account_name: String,
    pub account_number: String,
}

impl BankTransfer {
    pub fn new(bank_name: &str, account_name: &str, account_number: &str) -> Self {
        BankTransfer { bank_name: bank_name.into(), account_name: account_name.into(), account_number: account_number.into() }
    }
}

impl PaymentProvider for BankTransfer {
    fn method(&self) -> PaymentMethod {
        PaymentMethod::Bank
    }

    fn checkout(&self, order: &Order, _return_url: &str) -> Checkout {
        Checkout::Instructions {
            bank_name: self.bank_name.clone(),
            account_name: self.account_name.clone(),
            account_number: self.account_number.clone(),
            reference: order.reference.clone(),
            amount: order.amount_micros,
        }
    }

    /// Staff confirm transfers ([`purchases::confirm_bank_transfer`]); there is no notification.
    fn verify_notification(&self, _headers: &http::HeaderMap, _body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        Err(PaymentError::NotSupported)
    }

    fn ack(&self) -> (u16, String) {
        (200, "ok".into())
    }
}
