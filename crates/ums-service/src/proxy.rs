//! Reading the PROXY protocol version 2 header (haproxy's `proxy-protocol.txt`, section 2.2) that
//! a load balancer such as `ums-broker` sends before the client's bytes, so a server behind it
//! learns the device's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest address block accepted (the specification's largest, AF_UNIX, is 216 bytes).
const MAX_BLOCK: usize = 512;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("PROXY v2 header: {what}"),
    )
}

/// Reads one v2 header. Returns the source address of a proxied TCP connection, `None` for a
/// LOCAL connection (the proxy's own health check) or an address family other than TCP over IPv4
/// or IPv6. A stream that does not start with a v2 header is an error: the server was told a
/// proxy stands in front of it.
pub async fn read_v2<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 16];
    r.read_exact(&mut head).await?;
    if head[..12] != SIGNATURE {
        return Err(invalid("missing; is the load balancer sending it?"));
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0f);
    if version != 2 {
        return Err(invalid("not version 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BLOCK {
        return Err(invalid("address block too long"));
    }
    let mut block = vec![0u8; len];
    r.read_exact(&mut block).await?;
    match command {
        0 => return Ok(None),
        1 => {}
        _ => return Err(invalid("unknown command")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    Ok(match head[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 if len >= 12 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), port(&block[8..10])))
        }
        // TCP over IPv6.
        0x21 if len >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let ip = Ipv6Addr::from(octets);
            let ip = ip
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip));
            Some(SocketAddr::new(ip, port(&block[32..34])))
        }
        0x11 | 0x21 => return Err(invalid("address block too short")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fam: u8, cmd: u8, block: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    #[tokio::test]
    async fn reads_the_source_and_leaves_the_payload() {
        let mut bytes = header(
            0x11,
            1,
            &[192, 0, 2, 7, 10, 0, 0, 1, 0x10, 0x92, 0x75, 0x31],
        );
        bytes.extend_from_slice(b"TLS...");
        let mut r = &bytes[..];
        let addr = read_v2(&mut r).await.expect("header");
        assert_eq!(addr, Some("192.0.2.7:4242".parse().expect("addr")));
        assert_eq!(r, b"TLS...", "the client's bytes are left for TLS");

        let mut block = [0u8; 36];
        block[..16].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets());
        block[32..34].copy_from_slice(&443u16.to_be_bytes());
        let bytes = header(0x21, 1, &block);
        let addr = read_v2(&mut &bytes[..]).await.expect("v6");
        assert_eq!(addr, Some("[2001:db8::1]:443".parse().expect("addr")));

        // A mapped IPv4 address is read as IPv4.
        let mut block = [0u8; 36];
        block[..16].copy_from_slice(&Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets());
        block[32..34].copy_from_slice(&80u16.to_be_bytes());
        let bytes = header(0x21, 1, &block);
        let addr = read_v2(&mut &bytes[..]).await.expect("mapped");
        assert_eq!(addr, Some("10.1.2.3:80".parse().expect("addr")));
    }

    #[tokio::test]
    async fn local_connections_and_bad_headers() {
        let bytes = header(0x00, 0, &[]);
        assert_eq!(read_v2(&mut &bytes[..]).await.expect("local"), None);
        for bad in [
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03........".to_vec(),
            header(0x11, 1, &[1, 2, 3]),
            header(0x11, 7, &[0; 12]),
            {
                let mut h = header(0x11, 1, &[0; 12]);
                h[12] = 0x11;
                h
            },
            SIGNATURE[..10].to_vec(),
        ] {
            assert!(
                read_v2(&mut &bad[..]).await.is_err(),
                "{bad:?} must be refused"
            );
        }
    }
}
