//! The PROXY protocol v2 header a server reads before a device's bytes
//! (`ums_service::proxy::read_v2`).
//!
//! Properties: reading never waits on a complete input and never takes more bytes than the
//! header's length field claims (the device's bytes after it are left for TLS); an accepted
//! header is exactly what the specification accepts, the address it returns is the one in the
//! address block; and the broker's writer (`ums_broker::proxy_protocol::header_v2`) produces a
//! header the reader gives the same address back from.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ums_broker::proxy_protocol::{SIGNATURE, header_v2};
use ums_service::proxy::read_v2;

pub const DICTIONARY: &[&[u8]] = &[
    b"\r\n\r\n\0\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x20\x00\x00\x00",
    b"\x02\x00",
    b"\xff\xff",
];

/// Reads a header from `bytes`; a byte slice is always ready, so one poll decides.
fn read(bytes: &[u8]) -> (std::io::Result<Option<SocketAddr>>, usize) {
    let mut rest = bytes;
    let result = {
        let mut fut = pin!(read_v2(&mut rest));
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("read_v2 waits although all input is there"),
        }
    };
    (result, bytes.len() - rest.len())
}

/// What the specification makes of `data`: `Ok(consumed, address)` or `Err(())`.
fn expected(data: &[u8]) -> Result<(usize, Option<SocketAddr>), ()> {
    if data.len() < 16 || data[..12] != SIGNATURE || data[12] >> 4 != 2 {
        return Err(());
    }
    let len = usize::from(u16::from_be_bytes([data[14], data[15]]));
    if len > 512 || data.len() < 16 + len {
        return Err(());
    }
    let block = &data[16..16 + len];
    let addr = match (data[12] & 0x0f, data[13]) {
        (0, _) => None,
        (1, 0x11) if len >= 12 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(block[0], block[1], block[2], block[3])),
            u16::from_be_bytes([block[8], block[9]]),
        )),
        (1, 0x21) if len >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let ip = Ipv6Addr::from(octets);
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some(SocketAddr::new(
                ip,
                u16::from_be_bytes([block[32], block[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Err(()),
        (1, _) => None,
        _ => return Err(()),
    };
    Ok((16 + len, addr))
}

pub fn fuzz(data: &[u8]) {
    let (result, consumed) = read(data);
    assert!(consumed <= data.len());
    match (&result, expected(data)) {
        (Ok(addr), Ok((want_consumed, want_addr))) => {
            assert_eq!(
                consumed, want_consumed,
                "the header's bytes, no more, no less"
            );
            assert_eq!(*addr, want_addr);
        }
        (Err(_), Err(())) => {}
        (got, want) => panic!("read_v2 gave {got:?}, the specification {want:?}"),
    }
    // The broker's header for the address read comes back as that address.
    if let Ok(Some(source)) = result {
        for destination in [
            SocketAddr::from(([10, 0, 0, 1], 30002)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 30002)),
        ] {
            let mut header = header_v2(source, destination);
            let written = header.len();
            header.extend_from_slice(&data[consumed..]);
            let (again, consumed_again) = read(&header);
            assert_eq!(again.ok().flatten(), Some(source), "{header:?}");
            assert_eq!(consumed_again, written);
        }
    }
}
