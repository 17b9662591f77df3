#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::ldap_filter::fuzz(data));
