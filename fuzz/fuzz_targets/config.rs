#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::config::fuzz(data));
