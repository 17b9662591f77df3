#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::proxy_v2::fuzz(data));
