//! What the chorus benchmark and fault tools share: a set of member processes on this
//! machine ([`localset`]).

pub mod localset;
