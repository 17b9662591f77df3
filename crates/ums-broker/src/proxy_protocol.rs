//! The PROXY protocol version 2 header (haproxy's `proxy-protocol.txt`, section 2.2), sent to
//! a server before the device's bytes so it can learn the device's address.

use std::net::{IpAddr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header of a proxied TCP connection from `source` (the device) to `destination` (the
/// address the device connected to). Mixed families are sent as IPv6, IPv4 addresses mapped.
pub fn header_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // AF_INET, STREAM.
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            // AF_INET6, STREAM.
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_layout() {
        let h = header_v2(
            "192.168.1.10:54321".parse().expect("addr"),
            "10.0.0.1:30001".parse().expect("addr"),
        );
        let mut want = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        want.extend_from_slice(&[192, 168, 1, 10, 10, 0, 0, 1]);
        want.extend_from_slice(&[0xd4, 0x31, 0x75, 0x31]); // 54321, 30001
        assert_eq!(h, want);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn ipv6_header_layout() {
        let h = header_v2(
            "[2001:db8::1]:1024".parse().expect("addr"),
            "[2001:db8::2]:30001".parse().expect("addr"),
        );
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 1;
        let mut dst = src;
        dst[15] = 2;
        assert_eq!(&h[16..32], &src);
        assert_eq!(&h[32..48], &dst);
        assert_eq!(&h[48..52], &[0x04, 0x00, 0x75, 0x31]);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let h = header_v2(
            "10.1.2.3:5".parse().expect("addr"),
            "[::1]:30001".parse().expect("addr"),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(
            &h[16..32],
            &"::ffff:10.1.2.3"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets()
        );
    }
}
