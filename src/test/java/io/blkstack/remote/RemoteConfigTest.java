package io.blkstack.remote;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.TestKernel;
import io.blkstack.config.ConfigException;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.config.StackConfig.RemoteSpec;
import org.junit.jupiter.api.Test;

/** The {@code nbd:} device kind in a configuration: its keys, its defaults, and what it refuses. */
class RemoteConfigTest {

    private static StackConfig parse(String yaml) throws ConfigException {
        return StackConfig.parse("stack.yaml", yaml, null);
    }

    private static String refusal(String yaml) {
        return assertThrows(ConfigException.class, () -> parse(yaml)).getMessage();
    }

    @Test
    void remoteDevicesParseWithDefaults() throws Exception {
        StackConfig config = parse("""
                devices:
                  r0: { nbd: "nbd://storage1:10810/disk0", connections: 4, timeout: 5s, size: 1GiB }
                  r1: { nbd: "nbd+unix:///d?socket=/run/x.sock" }
                exports:
                  default: { device: r0 }
                """);
        RemoteSpec r0 = (RemoteSpec) config.devices().get(0);
        assertEquals("nbd://storage1:10810/disk0", r0.uri());
        assertEquals(4, r0.connections());
        assertEquals(5_000_000_000L, r0.timeoutNanos());
        assertEquals(1L << 30, r0.sizeBytes());
        RemoteSpec r1 = (RemoteSpec) config.devices().get(1);
        assertEquals(1, r1.connections());
        assertEquals(RemoteSpec.TIMEOUT_DEFAULT_NANOS, r1.timeoutNanos());
        assertEquals(0, r1.sizeBytes());
        assertEquals(3, r1.line());
    }

    /** nbds URIs take a tls map: ca, an optional client cert and key, verify-peer; absolute paths kept. */
    @Test
    void tlsDevicesParseTheirTlsMap() throws Exception {
        StackConfig config = parse("""
                devices:
                  r0: { nbd: "nbds://storage1/disk0", tls: { ca: /pki/ca-cert.pem, cert: /pki/c.pem, key: /pki/k.pem } }
                  r1: { nbd: "nbds+unix:///d?socket=/run/x.sock", tls: { verify-peer: false } }
                  r2: { nbd: "nbd://storage2/disk0" }
                exports:
                  default: { device: r0 }
                """);
        RemoteSpec r0 = (RemoteSpec) config.devices().get(0);
        assertEquals(new StackConfig.RemoteTlsSpec(java.nio.file.Path.of("/pki/ca-cert.pem"),
                java.nio.file.Path.of("/pki/c.pem"), java.nio.file.Path.of("/pki/k.pem"), true), r0.tls());
        RemoteSpec r1 = (RemoteSpec) config.devices().get(1);
        assertEquals(new StackConfig.RemoteTlsSpec(null, null, null, false), r1.tls());
        assertNull(((RemoteSpec) config.devices().get(2)).tls());
    }

    @Test
    void tlsMisuseAndBadUrisAreRefusedWithTheirLine() {
        String tls = refusal("""
                devices:
                  r0: { nbd: "nbd://h/e", tls: { ca: /ca.pem } }
                """);
        assertTrue(tls.contains("stack.yaml:2") && tls.contains("devices.r0.tls") && tls.contains("nbds://"), tls);
        String nbds = refusal("""
                devices:
                  r0: { nbd: "nbds://h/e" }
                """);
        assertTrue(nbds.contains("devices.r0.nbd") && nbds.contains("no tls map"), nbds);
        String noCa = refusal("""
                devices:
                  r0: { nbd: "nbds://h/e", tls: { cert: /c.pem, key: /k.pem } }
                """);
        assertTrue(noCa.contains("devices.r0.tls") && noCa.contains("no ca") && noCa.contains("verify-peer: false"), noCa);
        String noKey = refusal("""
                devices:
                  r0: { nbd: "nbds://h/e", tls: { ca: /ca.pem, cert: /c.pem } }
                """);
        assertTrue(noKey.contains("devices.r0.tls") && noKey.contains("cert but no key"), noKey);
        String mode = refusal("""
                devices:
                  r0: { nbd: "nbds://h/e", tls: { ca: /ca.pem, mode: on } }
                """);
        assertTrue(mode.contains("devices.r0.tls.mode"), mode);
        String noSocket = refusal("""
                devices:
                  r0: { nbd: "nbd+unix:///e" }
                """);
        assertTrue(noSocket.contains("socket"), noSocket);
        String key = refusal("""
                devices:
                  r0: { nbd: "nbd://h/e", latency: 1ms }
                """);
        assertTrue(key.contains("devices.r0.latency"), key);
        String connections = refusal("""
                devices:
                  r0: { nbd: "nbd://h/e", connections: 17 }
                """);
        assertTrue(connections.contains("devices.r0.connections"), connections);
    }

    /** A dry build (table check) does not connect, so it needs the size from the file. */
    @Test
    void aDryBuildNeedsTheSize() throws Exception {
        StackConfig without = parse("""
                devices:
                  r0: { nbd: "nbd://127.0.0.1:1/e" }
                exports:
                  default: { device: r0 }
                """);
        try (TestKernel tk = new TestKernel("remote-config")) {
            ConfigException e = assertThrows(ConfigException.class, () -> Stack.build(tk.kernel, without, Stack.Mode.DRY));
            assertTrue(e.getMessage().contains("devices.r0") && e.getMessage().contains("size"), e.getMessage());
            StackConfig with = parse("""
                    devices:
                      r0: { nbd: "nbd://127.0.0.1:1/e", size: 16MiB }
                    mapped:
                      l: |
                        0 32768 linear r0 0
                    exports:
                      default: { device: l }
                    """);
            try (Stack stack = Stack.build(tk.kernel, with, Stack.Mode.DRY)) {
                assertEquals(16L << 20, stack.device("r0").capacityBytes());
            }
        }
    }
}
