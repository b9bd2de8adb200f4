package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.TestKernel;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The configuration reader and the stack builder's errors: each names the file, the line and the
 * bad value, whether the reader finds it (shape, keys, sizes, names) or only building does (table
 * arguments, references between devices, which need the devices).
 */
class StackConfigTest {

    private static final String FILE = "stack.yaml";

    @TempDir
    Path tmp;

    private static StackConfig parse(String text) throws ConfigException {
        return StackConfig.parse(FILE, text, Path.of("/base"));
    }

    /** Parses {@code text} expecting an error; returns it. */
    private static ConfigException parseError(String text) {
        return assertThrows(ConfigException.class, () -> parse(text));
    }

    /** Parses and builds dry, expecting an error from building. */
    private static ConfigException buildError(String text) throws ConfigException {
        StackConfig config = parse(text);
        try (TestKernel tk = new TestKernel("config-test", 16L << 20, Policies.defaults(), Faults.NONE)) {
            return assertThrows(ConfigException.class, () -> Stack.build(tk.kernel, config, Stack.Mode.DRY).close());
        }
    }

    private static void assertPlace(ConfigException e, int line, String... fragments) {
        assertEquals(FILE, e.file(), e.getMessage());
        assertEquals(line, e.line(), e.getMessage());
        assertTrue(e.getMessage().startsWith(FILE + ":" + line + ": "), e.getMessage());
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "'" + f + "' missing from: " + e.getMessage());
        }
    }

    @Test
    void parsesTheDesignShape() throws ConfigException {
        StackConfig c = parse("""
                memory: 32MiB
                listen: 0.0.0.0:10900
                devices:
                  a: { file: data/a.img, size: 1GiB }
                  b: { file: /abs/b.img, size: 1GiB, direct: true }
                  m: { memory: 256MiB }
                  n: { null: 1GiB, latency: 100us }
                mapped:
                  stripe0: |
                    0 4194304 striped 2 128 a 0 b 0
                exports:
                  default: { device: stripe0 }
                  snap: { device: m, readonly: true, description: "a memory disk" }
                """);
        assertEquals(32L << 20, c.memoryBytes());
        assertEquals(new ListenAddress("0.0.0.0", 10900), c.listen());
        assertEquals(new FileSpec("a", Path.of("/base/data/a.img"), "data/a.img", 1L << 30, false, FileSpec.IO_TASKS_DEFAULT,
                FileSpec.QUEUE_DEPTH_DEFAULT, 4, 4),
                c.devices().get(0));
        assertEquals(Path.of("/abs/b.img"), ((FileSpec) c.devices().get(1)).path());
        assertTrue(((FileSpec) c.devices().get(1)).direct());
        assertEquals(new MemorySpec("m", 256L << 20, 0, 6, 6), c.devices().get(2));
        assertEquals(new NullSpec("n", 1L << 30, 100_000, 7, 7), c.devices().get(3));
        assertEquals("0 4194304 striped 2 128 a 0 b 0\n", c.mapped().get(0).table());
        assertEquals(10, c.mapped().get(0).fileLine(1), "table line 1 is the line after the '|'");
        assertTrue(c.exports().get(1).readOnly());
        assertEquals("a memory disk", c.exports().get(1).description());
        assertFalse(c.exports().get(0).readOnly());
    }

    @Test
    void fileDeviceIoTasksAndQueueDepth() throws ConfigException {
        StackConfig c = parse("devices:\n  a: { file: a.img, size: 1MiB, io-tasks: 2, queue-depth: 16 }\n"
                + "exports:\n  x: { device: a }\n");
        FileSpec a = (FileSpec) c.devices().get(0);
        assertEquals(2, a.ioTasks());
        assertEquals(16, a.queueDepth());
        assertPlace(parseError("devices:\n  a: { file: a.img, size: 1MiB, io-tasks: 0 }\nexports: {}\n"), 2,
                "devices.a.io-tasks", "'0'", "1..64");
        assertPlace(parseError("devices:\n  a: { file: a.img, size: 1MiB, queue-depth: deep }\nexports: {}\n"), 2,
                "devices.a.queue-depth", "'deep'", "whole number");
        assertPlace(parseError("devices:\n  m: { memory: 1MiB, io-tasks: 2 }\nexports: {}\n"), 2,
                "devices.m.io-tasks", "does not apply to a memory device");
    }

    // Proves listen takes one address or a list mixing TCP and Unix sockets: a Unix path resolves
    // against the file's directory and gets mode 0600 unless a map gives another; a mode that is not
    // octal, that opens execute bits or shuts the owner out, the same address twice and an empty
    // list are errors naming the line and the bad value.
    @Test
    void listenTakesTcpAndUnixSocketsInAList() throws ConfigException {
        String tail = "devices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n";
        StackConfig one = parse("listen: unix:run/nbd.sock\n" + tail);
        assertEquals(List.of(ListenAddress.unix(Path.of("/base/run/nbd.sock"), ListenAddress.SOCKET_MODE_DEFAULT)),
                one.listeners());
        assertEquals("rw-------", one.listen().socketModeText());
        StackConfig many = parse("""
                listen:
                  - 127.0.0.1:10809
                  - unix:/run/blkstack/nbd.sock
                  - { unix: group.sock, mode: "0660" }
                """ + tail);
        assertEquals(3, many.listeners().size());
        assertEquals(new ListenAddress("127.0.0.1", 10809), many.listen());
        assertEquals("unix:/run/blkstack/nbd.sock", many.listeners().get(1).toString());
        assertEquals(Path.of("/base/group.sock"), many.listeners().get(2).socket());
        assertEquals("rw-rw----", many.listeners().get(2).socketModeText());

        assertPlace(parseError("listen:\n  - { unix: a.sock, mode: rw }\n" + tail), 2, "listen.mode", "'rw'", "octal");
        assertPlace(parseError("listen:\n  - { unix: a.sock, mode: \"0755\" }\n" + tail), 2, "'0755'", "execute");
        assertPlace(parseError("listen:\n  - { unix: a.sock, mode: \"0066\" }\n" + tail), 2, "'0066'", "owner");
        assertPlace(parseError("listen:\n  - unix:a.sock\n  - unix:/base/a.sock\n" + tail), 3, "listen[1]",
                "given twice");
        assertPlace(parseError("listen: []\n" + tail), 1, "listen", "empty list");
        assertPlace(parseError("listen: \"unix:\"\n" + tail), 1, "listen", "unix:PATH");
    }

    // Proves the tls map: mode off|on|require (on unless given), PEM paths resolved against the
    // file's directory, ca optional; off when absent; a mode that is not one of the three, TLS on
    // without a key, and an unknown key are errors naming the line.
    @Test
    void tlsTakesModeAndPemFiles() throws ConfigException {
        String tail = "devices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n";
        assertEquals(StackConfig.TlsSpec.OFF, parse(tail).tls());
        StackConfig c = parse("tls: { mode: require, cert: pki/server-cert.pem, key: pki/server-key.pem, ca: /etc/ca.pem }\n"
                + tail);
        assertEquals(new StackConfig.TlsSpec(io.blkstack.nbd.ServerTls.Mode.REQUIRE, Path.of("/base/pki/server-cert.pem"),
                Path.of("/base/pki/server-key.pem"), Path.of("/etc/ca.pem")), c.tls());
        assertEquals(io.blkstack.nbd.ServerTls.Mode.ON, parse("tls: { cert: c.pem, key: k.pem }\n" + tail).tls().mode());
        assertEquals(io.blkstack.nbd.ServerTls.Mode.OFF, parse("tls: { mode: off }\n" + tail).tls().mode());
        assertPlace(parseError("tls: { mode: maybe, cert: c.pem, key: k.pem }\n" + tail), 1, "tls.mode", "'maybe'",
                "off, on or require");
        assertPlace(parseError("tls:\n  mode: on\n  cert: c.pem\n" + tail), 2, "tls", "no key");
        assertPlace(parseError("tls: { mode: on, cert: c.pem, key: k.pem, verify: yes }\n" + tail), 1, "tls.verify",
                "unknown key");
    }

    @Test
    void defaultsWhenMemoryAndListenAreMissing() throws ConfigException {
        StackConfig c = parse("devices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n");
        assertEquals(StackConfig.DEFAULT_MEMORY_BYTES, c.memoryBytes());
        assertEquals(ListenAddress.DEFAULT, c.listen());
    }

    @Test
    void connectionLimitAndTimeoutsParseWithDefaults() throws ConfigException {
        StackConfig d = parse("devices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n");
        assertEquals(new StackConfig.Connections(1024, 10_000_000_000L, 0, 30_000_000_000L, 120_000_000_000L),
                d.connections());
        StackConfig c = parse("""
                max-connections: 8
                handshake-timeout: 250ms
                idle-timeout: 600s
                reply-timeout: 1500ms
                request-timeout: 45s
                devices:
                  m: { memory: 1MiB }
                exports:
                  x: { device: m }
                """);
        assertEquals(new StackConfig.Connections(8, 250_000_000L, 600_000_000_000L, 1_500_000_000L, 45_000_000_000L),
                c.connections());
        StackConfig off = parse("idle-timeout: off\ndevices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n");
        assertEquals(0, off.connections().idleTimeoutNanos());
        StackConfig replyOff = parse("reply-timeout: off\ndevices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n");
        assertEquals(0, replyOff.connections().replyTimeoutNanos());
        StackConfig requestOff = parse("request-timeout: off\ndevices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n");
        assertEquals(0, requestOff.connections().requestTimeoutNanos());
    }

    @Test
    void badConnectionSettingsNameLineKeyAndValue() {
        String rest = "devices:\n  m: { memory: 1MiB }\nexports:\n  x: { device: m }\n";
        assertPlace(parseError("memory: 16MiB\nmax-connections: 0\n" + rest), 2,
                "max-connections: '0' is not in 1..65536");
        assertPlace(parseError("max-connections: many\n" + rest), 1, "max-connections: 'many' is not a whole number");
        assertPlace(parseError("handshake-timeout: 10\n" + rest), 1,
                "handshake-timeout: '10' is not a duration: use a whole number with ns, us, ms or s");
        assertPlace(parseError("handshake-timeout: 0s\n" + rest), 1, "handshake-timeout: '0s' is not a positive duration");
        assertPlace(parseError("handshake-timeout: off\n" + rest), 1, "handshake-timeout: 'off' is not a duration");
        assertPlace(parseError("idle-timeout: 2d\n" + rest), 1, "idle-timeout: '2d' is not a duration", "or off");
        assertPlace(parseError("idle-timeout: 100000s\n" + rest), 1, "idle-timeout: '100000s' is longer than a day");
        assertPlace(parseError("memory: 16MiB\nreply-timeout: 30\n" + rest), 2,
                "reply-timeout: '30' is not a duration: use a whole number with ns, us, ms or s", "or off");
        assertPlace(parseError("reply-timeout: 0s\n" + rest), 1, "reply-timeout: '0s' is not a positive duration", "or off");
        assertPlace(parseError("reply-timeout: 2d\n" + rest), 1, "reply-timeout: '2d' is not a duration", "or off");
        assertPlace(parseError("reply-timeout: 100000s\n" + rest), 1, "reply-timeout: '100000s' is longer than a day");
        assertPlace(parseError("memory: 16MiB\nrequest-timeout: 2m\n" + rest), 2,
                "request-timeout: '2m' is not a duration: use a whole number with ns, us, ms or s", "or off");
        assertPlace(parseError("request-timeout: 0s\n" + rest), 1, "request-timeout: '0s' is not a positive duration");
    }

    @Test
    void unknownKeyNamesLineAndKey() {
        ConfigException e = parseError("""
                devices:
                  a: { memory: 1GiB }
                exports:
                  x: { device: a, read_only: true }
                """);
        assertPlace(e, 4, "exports.x.read_only", "unknown key", "readonly");
        assertPlace(parseError("memroy: 64MiB\nexports: {}\n"), 1, "memroy", "unknown key");
    }

    @Test
    void badSizeNamesLineAndValue() {
        ConfigException e = parseError("""
                devices:
                  m: { memory: 1GiB }
                  a:
                    file: a.img
                    size: 1GB
                exports:
                  x: { device: a }
                """);
        assertPlace(e, 5, "devices.a.size", "'1GB'", "GiB");
        assertPlace(parseError("memory: 100\nexports: {}\n"), 1, "memory", "'100'", "4MiB");
        assertPlace(parseError("devices:\n  m: { memory: 1000 }\nexports: {}\n"), 2, "devices.m.memory", "'1000'", "512");
    }

    @Test
    void duplicateNamesAreErrors() {
        assertPlace(parseError("""
                devices:
                  a: { memory: 1GiB }
                  a: { memory: 2GiB }
                exports:
                  x: { device: a }
                """), 3, "devices.a", "twice", "line 2");
        assertPlace(parseError("""
                devices:
                  a: { memory: 1GiB }
                mapped:
                  a: "0 8 linear a 0"
                exports:
                  x: { device: a }
                """), 4, "mapped.a", "already the name of a device");
    }

    @Test
    void exportOfUnknownDeviceNamesIt() {
        assertPlace(parseError("""
                devices:
                  a: { memory: 1GiB }
                exports:
                  x: { device: a }
                  y:
                    device: nosuch
                """), 6, "exports.y.device", "'nosuch'", "known: a");
    }

    @Test
    void deviceKindMustBeExactlyOne() {
        assertPlace(parseError("devices:\n  a: { size: 1GiB }\nexports: {}\n"), 2, "devices.a", "no kind");
        assertPlace(parseError("devices:\n  a: { memory: 1GiB, null: 1GiB }\nexports: {}\n"), 2, "2 kinds");
        assertPlace(parseError("devices:\n  a: { memory: 1GiB, direct: true }\nexports: {}\n"), 2,
                "devices.a.direct", "does not apply to a memory device");
        assertPlace(parseError("devices:\n  a: { file: a.img }\nexports: {}\n"), 2, "without 'size'");
        assertPlace(parseError("devices:\n  a: { null: 1GiB, latency: 2h }\nexports: {}\n"), 2, "'2h'", "duration");
        assertPlace(parseError("devices:\n  a: { memory: 1GiB }\nexports:\n  x: { device: a, readonly: yes }\n"), 4,
                "exports.x.readonly", "'yes'", "true or false");
    }

    @Test
    void syntaxAndShapeErrorsHaveLines() {
        assertPlace(parseError("devices:\n  a: { memory: 1GiB\nexports:\n"), 3, "not valid YAML");
        assertPlace(parseError("devices: [a, b]\nexports: {}\n"), 1, "devices", "not a map");
        assertPlace(parseError("devices:\n  'bad name': { memory: 1GiB }\nexports: {}\n"), 2, "'bad name'", "not a name");
        assertPlace(parseError("listen: localhost\nexports: {}\n"), 1, "listen", "'localhost'");
        assertPlace(parseError("devices:\n  a: { memory: 1GiB }\n"), 1, "no 'exports'");
    }

    @Test
    void unknownDeviceInTableNamesTheYamlLine() throws ConfigException {
        ConfigException e = buildError("""
                devices:
                  a: { memory: 1GiB }
                mapped:
                  s: |
                    0 100 linear a 0
                    100 100 linear q 0
                exports:
                  x: { device: s }
                """);
        assertPlace(e, 6, "mapped.s (table line 2)", "'q'", "names no known device");
    }

    @Test
    void forwardReferenceIsNamed() throws ConfigException {
        ConfigException e = buildError("""
                devices:
                  a: { memory: 1GiB }
                mapped:
                  s: |
                    0 100 linear t 0
                  t: |
                    0 100 linear a 0
                exports:
                  x: { device: s }
                """);
        assertPlace(e, 5, "'t'", "forward reference", "line 6");
        ConfigException self = buildError("devices:\n  a: { memory: 1GiB }\nmapped:\n  s: \"0 8 linear s 0\"\n"
                + "exports:\n  x: { device: s }\n");
        assertPlace(self, 4, "'s'", "its own device");
    }

    @Test
    void badTableArgumentMapsToTheYamlLine() throws ConfigException {
        ConfigException e = buildError("""
                devices:
                  a: { memory: 1MiB }
                  b: { memory: 1MiB }
                mapped:
                  s: |
                    # a comment line counts as a table line
                    0 1024 striped 2 abc a 0 b 0
                exports:
                  x: { device: s }
                """);
        assertPlace(e, 7, "mapped.s (table line 2)", "striped", "'abc'");
        ConfigException past = buildError("""
                devices:
                  a: { memory: 1MiB }
                mapped:
                  s: |
                    0 4096 linear a 0
                exports:
                  x: { device: s }
                """);
        assertPlace(past, 5, "past the end of device a");
    }

    @Test
    void loadResolvesRelativeFilesAgainstTheConfigDirectory() throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("conf"));
        Path file = dir.resolve("stack.yaml");
        Files.writeString(file, "devices:\n  a: { file: data/a.img, size: 1MiB }\nexports:\n  x: { device: a }\n");
        StackConfig c = StackConfig.load(file);
        assertEquals(dir.toAbsolutePath().resolve("data/a.img"), ((FileSpec) c.devices().get(0)).path());
        assertEquals(file.toString(), c.source());
    }

    @Test
    void dryBuildCreatesNoFiles() throws Exception {
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, "devices:\n  a: { file: data/a.img, size: 1MiB }\nmapped:\n  l: \"0 2048 linear a 0\"\n"
                + "exports:\n  x: { device: l }\n");
        StackConfig c = StackConfig.load(file);
        try (TestKernel tk = new TestKernel("dry")) {
            try (Stack s = Stack.build(tk.kernel, c, Stack.Mode.DRY)) {
                assertEquals(2048, s.device("l").capacitySectors());
                assertEquals(1, s.exports().size());
            }
        }
        assertFalse(Files.exists(tmp.resolve("data")), "a dry build must not create backing files");
    }

    @Test
    void serveBuildCreatesSparseFilesAndClosesOnError() throws IOException, ConfigException {
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, """
                devices:
                  a: { file: data/a.img, size: 1MiB }
                mapped:
                  l: "0 2048 linear a 0"
                  bad: "0 8 linear nosuch 0"
                exports:
                  x: { device: l }
                """);
        StackConfig c = StackConfig.load(file);
        try (TestKernel tk = new TestKernel("serve-build")) {
            ConfigException e = assertThrows(ConfigException.class, () -> Stack.build(tk.kernel, c, Stack.Mode.SERVE));
            assertTrue(e.getMessage().contains(":5: "), e.getMessage());
            assertTrue(tk.kernel.components().stream().noneMatch(d -> d.name().equals("a") || d.name().equals("l")),
                    "a failed build closes the devices it built: " + tk.kernel.components());
        }
        assertEquals(1L << 20, Files.size(tmp.resolve("data/a.img")));
    }
}
