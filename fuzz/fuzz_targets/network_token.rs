#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::network_token::fuzz(data));
