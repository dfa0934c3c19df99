pub mod chart;
pub mod form;
pub mod loaded;
pub mod layout;
