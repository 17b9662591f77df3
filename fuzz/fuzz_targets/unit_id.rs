#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::unit_id::fuzz(data));
