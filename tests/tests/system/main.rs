//! One integration-test binary for the whole system (one link on 2 cores); scenarios are modules.

mod smoke;
