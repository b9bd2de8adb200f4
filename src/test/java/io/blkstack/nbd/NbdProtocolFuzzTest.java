package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.*;

import com.code_intelligence.jazzer.api.BugDetectors;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.nbd.NbdFuzzScript.Builder;
import io.blkstack.nbd.NbdFuzzScript.Ending;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Fuzzes {@link NbdServer}'s handshake and transmission phase with Jazzer (issue 12, bullet 8).
 *
 * <p>What one input proves: a server on a memory device, serving a client that sends whatever
 * {@link NbdFuzzScript} decodes from the input (malformed options, lying lengths, bad magic,
 * requests past the end, oversized, unaligned or with missing payloads, abrupt resets), (1) keeps
 * serving a well-behaved client next to it, which writes patterns to its own export and reads
 * them back while the fuzzed stream is sent; (2) closes the fuzzed connection once that client has
 * shut down its output; (3) accepts and serves a new client afterwards; and (4) at close has every
 * page back in the arena and every bio back in its bio set (the kernel's close checks, run per
 * input by closing the server), with no task crashed and no misuse reported. Every wait is on a
 * socket or a thread under a bound ({@link #HANG_BOUND}): a hang fails the input with the state of
 * the server and the stacks of its tasks, rather than stalling the run. Nothing sleeps.
 *
 * <p>Modes. Under plain {@code mvn test} Jazzer runs in regression mode: every seed of
 * {@link #fuzzProtocol()} (the programs below) and every file under
 * {@code src/test/resources/io/blkstack/nbd/NbdProtocolFuzzTestInputs/fuzzProtocol/} (findings and
 * kept corpus entries) runs once. With {@code JAZZER_FUZZ=1} ({@code scripts/fuzz DURATION}) it
 * fuzzes from those seeds for the given time and writes a failing input to that directory.
 */
class NbdProtocolFuzzTest {

    private static final long MiB = 1L << 20;
    /** The export only the well-behaved clients use; the fuzzed client's names never decode to it. */
    static final String GOOD_EXPORT = "good-export-of-the-well-behaved-client";
    /** Size of the fuzzed client's writable export. */
    static final long FUZZ_EXPORT_BYTES = MiB;
    /** Longest wait for anything the server must do; reaching it is a hang, a finding. */
    static final Duration HANG_BOUND = Duration.ofSeconds(60);
    /** Write-and-read-back rounds of the well-behaved client while the fuzzed stream is sent. */
    private static final int GOOD_ROUNDS = 3;

    private TestKernel tk;
    private List<Export> exports;
    private final List<String> log = new CopyOnWriteArrayList<>();

    @BeforeEach
    void startKernel() {
        tk = new TestKernel("nbd-fuzz", 16 * MiB, Policies.defaults(), Faults.NONE);
        exports = List.of(
                new Export("fuzz", new MemoryDevice(tk.kernel, "dev-fuzz", FUZZ_EXPORT_BYTES, 0), false, "fuzzed"),
                new Export("ro", new MemoryDevice(tk.kernel, "dev-ro", 256 * 1024, 0), true, ""),
                new Export(GOOD_EXPORT, new MemoryDevice(tk.kernel, "dev-good", MiB, 0), false, ""));
    }

    @AfterEach
    void closeKernel() {
        if (tk != null) {
            tk.close(); // throws if any page, bio or pool element was not returned
        }
    }

    // ---- the fuzz target -----------------------------------------------------------------------

    @MethodSource("seeds")
    @FuzzTest(maxDuration = "60s") // Jazzer wants it last
    void fuzzProtocol(byte[] input) throws Exception {
        Session.run(tk.kernel, exports, log, input, true);
    }

    /** One input against a fresh server on the test's kernel; see the class comment for what it asserts. */
    static final class Session {
        private final Kernel kernel;
        private final NbdServer server;
        private final InetSocketAddress address;
        private final List<String> log;
        private final List<SocketChannel> sockets = new CopyOnWriteArrayList<>();
        /** Bytes the fuzzed client received, for tests that check a seed got past the handshake. */
        final AtomicLong received = new AtomicLong();

        private Session(Kernel kernel, NbdServer server, List<String> log) {
            this.kernel = kernel;
            this.server = server;
            this.address = server.localAddress();
            this.log = log;
        }

        /**
         * Runs one input; {@code underJazzer} says a Jazzer agent runs (a {@code @FuzzTest}), so
         * its request forgery detector must be told that connecting to the server is intended.
         */
        static Session run(Kernel kernel, List<Export> exports, List<String> log, byte[] input, boolean underJazzer)
                throws Exception {
            Kernel.Attachment self = Task.currentOrNull() == null ? kernel.attach("fuzz-input") : null;
            try {
                int pagesBefore = kernel.pages().allocatedPages();
                log.clear();
                NbdServer server = new NbdServer(kernel, exports, NbdServer.Options
                        .defaults(new InetSocketAddress("127.0.0.1", 0)).withLog(log::add));
                server.start();
                Session s = new Session(kernel, server, log);
                try (AutoCloseable permit = underJazzer ? allowConnectionsTo(s.address.getPort()) : () -> { }) {
                    s.drive(input);
                } finally {
                    s.closeServer();
                }
                assertEquals(List.of(), kernel.crashes(), "server tasks crashed");
                assertEquals(List.of(), kernel.misuses(), "misuse reported");
                assertEquals(pagesBefore, kernel.pages().allocatedPages(), "pages not returned to the arena");
                return s;
            } finally {
                if (self != null) {
                    self.close();
                }
            }
        }

        /** Tells Jazzer's server-side request forgery detector that connecting to the server's port is intended. */
        private static AutoCloseable allowConnectionsTo(int serverPort) {
            return BugDetectors.allowNetworkConnections((host, port) -> port == serverPort);
        }

        /** The fuzzed client next to a well-behaved one, then a new client. */
        private void drive(byte[] input) throws Exception {
            int maxPayload = server.exports().get(0).maximumPayload();
            NbdFuzzScript script = NbdFuzzScript.decode(input, GOOD_EXPORT, FUZZ_EXPORT_BYTES, maxPayload);
            SocketChannel fuzzed = open();
            AtomicReference<Throwable> drainError = new AtomicReference<>();
            Thread drain = Thread.ofPlatform().name("fuzz-drain").start(() -> drain(fuzzed, drainError));
            Thread sender = Thread.ofPlatform().name("fuzz-sender").start(() -> send(fuzzed, script));
            long seed = java.util.Arrays.hashCode(input);
            withBound("the well-behaved client next to the fuzzed one", () -> wellBehaved(seed, GOOD_ROUNDS));
            join(sender, "the fuzzed client's sender (the server stopped reading it)");
            if (script.ending == Ending.HALF_CLOSE) {
                join(drain, "the server closing the fuzzed connection after the client's end of stream");
            }
            closeQuietly(fuzzed);
            join(drain, "the fuzzed connection's reader");
            assertNull(drainError.get(), "reading the fuzzed connection failed");
            withBound("a new client after the fuzzed one", () -> wellBehaved(seed + 1, 1));
        }

        /** Greets, negotiates the good export, and writes then reads back patterns. */
        private void wellBehaved(long seed, int rounds) throws IOException {
            try (NbdTestClient c = new NbdTestClient(address)) {
                sockets.add(c.channel);
                c.greet();
                c.go(GOOD_EXPORT);
                Random random = new Random(seed);
                for (int i = 0; i < rounds; i++) {
                    byte[] data = new byte[4096 * (1 + random.nextInt(16))];
                    random.nextBytes(data);
                    long offset = 4096L * random.nextInt(256 - 16);
                    assertEquals(0, c.writeSync(offset, data, 0), "well-behaved write at " + offset);
                    assertArrayEquals(data, c.readSync(offset, data.length), "well-behaved read-back at " + offset);
                }
                assertEquals(0, c.commandSync(NbdProtocol.CMD_FLUSH, 0, 0, 0), "well-behaved flush");
                c.request(0, NbdProtocol.CMD_DISC, 99, 0, 0, null);
                assertTrue(c.readsEof(), "the server closes after DISC");
            }
        }

        private SocketChannel open() throws IOException {
            SocketChannel c = SocketChannel.open(address);
            sockets.add(c);
            return c;
        }

        /** Sends the stream, then leaves as the script says. A write failing means the server hung up. */
        private static void send(SocketChannel c, NbdFuzzScript script) {
            try {
                ByteBuffer b = ByteBuffer.wrap(script.stream);
                while (b.hasRemaining()) {
                    c.write(b);
                }
                switch (script.ending) {
                    case HALF_CLOSE -> c.shutdownOutput();
                    case CLOSE -> c.close();
                    case RESET -> {
                        c.setOption(StandardSocketOptions.SO_LINGER, 0);
                        c.close();
                    }
                }
            } catch (IOException e) {
                // the server closed the connection: a legitimate answer to a bad stream
            }
        }

        /** Reads and discards what the server sends the fuzzed client, until end of stream. */
        private void drain(SocketChannel c, AtomicReference<Throwable> error) {
            ByteBuffer b = ByteBuffer.allocate(256 * 1024);
            try {
                while (true) {
                    b.clear();
                    int n = c.read(b);
                    if (n < 0) {
                        return;
                    }
                    received.addAndGet(n);
                }
            } catch (IOException e) {
                // reset, or closed by us
            } catch (RuntimeException e) {
                error.set(e);
            }
        }

        @FunctionalInterface
        interface Work {
            void run() throws Exception;
        }

        /** Runs {@code work} on its own thread and waits at most {@link #HANG_BOUND} for it. */
        private void withBound(String what, Work work) throws Exception {
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread t = Thread.ofPlatform().name("fuzz-" + what).start(() -> {
                try {
                    work.run();
                } catch (Throwable e) {
                    failure.set(e);
                }
            });
            join(t, what);
            Throwable e = failure.get();
            if (e instanceof Exception ex) {
                throw ex;
            }
            if (e instanceof Error err) {
                throw err;
            }
        }

        /** Waits for a thread under the bound; past it, fails with the server's state. */
        private void join(Thread t, String what) throws InterruptedException {
            if (!t.join(HANG_BOUND)) {
                String state = hangReport(what);
                for (SocketChannel c : sockets) {
                    closeQuietly(c); // unblock the client threads
                }
                fail(state);
            }
        }

        /** The server's state, its log and the stacks of every thread, for a hang finding. */
        private String hangReport(String what) {
            StringBuilder sb = new StringBuilder("hang: " + what + " did not finish within " + HANG_BOUND + "\n");
            sb.append(server.describeState()).append('\n');
            sb.append(kernel.pages().describeState()).append('\n');
            sb.append("server log: ").append(log).append('\n');
            for (Map.Entry<Thread, StackTraceElement[]> e : Thread.getAllStackTraces().entrySet()) {
                sb.append("thread ").append(e.getKey().getName()).append(" (").append(e.getKey().getState()).append(")\n");
                for (StackTraceElement f : e.getValue()) {
                    sb.append("    at ").append(f).append('\n');
                }
            }
            return sb.toString();
        }

        /** Closes the server on a bounded thread: it waits for every connection and checks the bio set. */
        private void closeServer() throws Exception {
            for (SocketChannel c : sockets) {
                closeQuietly(c);
            }
            withBound("closing the server", () -> {
                try (Kernel.Attachment a = kernel.attach("fuzz-close")) {
                    server.close();
                }
            });
            assertEquals(0, server.connectionCount(), "connections left after close");
        }

        private static void closeQuietly(SocketChannel c) {
            try {
                c.close();
            } catch (IOException e) {
                // nothing to do
            }
        }
    }

    // ---- seed corpus ---------------------------------------------------------------------------

    /** The seed programs: a happy path per negotiation style, then one family of misbehaviour each. */
    static Stream<Arguments> seeds() {
        List<byte[]> seeds = new ArrayList<>();
        for (Ending e : Ending.values()) {
            // happy paths: GO with structured replies and base:allocation, GO simple, EXPORT_NAME
            seeds.add(new Builder(e).greet().go(0, true, true, false, false)
                    .request(0, 1, 1, 0, 3, 0, 1, 0, 0) // WRITE 8 KiB at 12 KiB
                    .request(0, 0, 2, 0, 3, 0, 1, 0, 0) // READ it back
                    .request(0, 7, 3, 0, 0, 0, 15, 0, 0) // BLOCK_STATUS 64 KiB
                    .request(0, 3, 4, 0, 0, 2, 0, 0, 0) // FLUSH
                    .disc().build());
        }
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(0, false, false, false, false)
                .request(1, 1, 1, 1, 7, 3, 100, 0, 0) // FUA WRITE of 100 bytes at 3584: unaligned
                .request(0, 0, 2, 6, 3, 3, 1, 0, 0) // READ of 1 byte at 3
                .request(0, 4, 3, 0, 1, 0, 0, 0, 0) // TRIM 4 KiB
                .request(0x10, 6, 4, 0, 2, 0, 0, 0, 0) // WRITE_ZEROES, FAST_ZERO
                .request(0, 5, 5, 0, 2, 0, 0, 0, 0) // CACHE
                .disc().build());
        seeds.add(new Builder(Ending.CLOSE).flags(1).exportName(0)
                .request(0, 1, 1, 0, 0, 0, 0, 0, 0).request(0, 0, 2, 0, 0, 0, 0, 0, 0).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(1, true, false, false, false) // read-only export
                .request(0, 1, 1, 0, 0, 0, 0, 0, 0) // WRITE: EPERM, payload still consumed
                .request(0, 4, 2, 0, 0, 0, 0, 0, 0) // TRIM: EPERM
                .request(0, 0, 3, 0, 0, 0, 0, 0, 0).disc().build());
        // requests past the end, at the end, oversized, zero-length, with bad flags
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(0, true, true, false, false)
                .request(0, 0, 1, 4, 0, 0, 0, 0, 0) // READ at the end
                .request(0, 0, 2, 3, 0, 0, 1, 0, 0) // READ straddling the end
                .request(0, 1, 3, 7, 7, 0, 0, 0, 0) // WRITE straddling the end
                .request(0, 0, 4, 0, 0, 4, 0, 0, 0) // READ of the maximum payload
                .request(0, 0, 5, 0, 0, 5, 0, 0, 0) // READ of maximum + 1
                .request(0, 0, 6, 0, 0, 6, 0, 0, 0) // READ of 4 GiB - 1
                .request(0, 0, 7, 0, 0, 2, 0, 0, 0) // READ of 0 bytes
                .request(0x1f, 0, 8, 0, 0, 0, 0, 0, 0) // READ with every flag
                .request(0x08, 7, 9, 0, 0, 0, 0, 0, 0) // BLOCK_STATUS REQ_ONE
                .disc().build());
        // WRITEs whose payload is short or missing, and oversized WRITEs (their payload must be skipped or the connection dropped)
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(0, false, false, false, false)
                .request(0, 1, 1, 0, 0, 0, 3, 1, 10).build()); // 16 KiB WRITE, 160 bytes sent
        seeds.add(new Builder(Ending.RESET).greet().go(0, false, false, false, false)
                .request(0, 1, 1, 0, 0, 5, 0, 0, 0).build()); // WRITE of maximum + 1
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(0, true, false, false, false)
                .request(0, 1, 1, 0, 0, 6, 0, 2, 0) // WRITE of 4 GiB - 1, no payload
                .request(0, 0, 2, 0, 0, 0, 0, 0, 0).build());
        seeds.add(new Builder(Ending.CLOSE).greet().go(0, true, false, false, false)
                .request(0, 1, 1, 0, 0, 4, 0, 0, 0) // WRITE of the maximum payload, 256 KiB sent
                .build());
        // unknown commands and bad magic
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().go(0, true, false, false, false)
                .rawCommand(8, 1).rawCommand(0xffff, 2).request(0, 0, 3, 0, 0, 0, 0, 0, 0)
                .badRequestMagic(0x12345678).request(0, 0, 4, 0, 0, 0, 0, 0, 0).build());
        // handshake: bad flags, options before and after GO, INFO, lists, meta contexts, lies
        seeds.add(new Builder(Ending.HALF_CLOSE).rawFlags(1 << 5).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).flags(2).exportName(0).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).greet()
                .option(2, 0) // LIST
                .option(2, 4, 3, 1, 2, 3) // LIST with data
                .option(3, 0) // STARTTLS
                .option(4, 2, 0, 4, 0, 1, 2, 3) // INFO fuzz: export, name, description, block size
                .option(4, 2, 1, 1, 3) // INFO ro
                .option(4, 2, 3, 3, 'x', 'y', 'z', 0) // INFO on an unknown name
                .option(7, 3, 0, 2, 0, 1) // LIST_META_CONTEXT base:allocation, base:
                .option(8, 3, 0, 2, 2, 3) // SET_META_CONTEXT before STRUCTURED_REPLY
                .option(6, 0).option(6, 0) // STRUCTURED_REPLY twice
                .option(6, 4, 1, 9) // STRUCTURED_REPLY with data
                .option(9, 0).option(10, 0) // option 0 and an unknown one
                .go(5, false, false, false, false) // GO "fuzz\0x": unknown
                .go(4, false, false, true, false) // GO on a 4097-byte name
                .go(0, true, true, true, false) // GO without block sizes
                .request(0, 0, 1, 0, 0, 3, 1, 0, 0) // READ of 1 byte
                .disc().build());
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().lyingOption(5, 0x7fffffff, 20).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().lyingOption(4, 4, 0).lyingOption(2, 100, 3).build());
        seeds.add(new Builder(Ending.RESET).greet().lyingOption(5, 20 << 20, 255).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).greet().option(1, 0).option(0, 1, 3, 0).build()); // ABORT, then EXPORT_NAME
        seeds.add(new Builder(Ending.CLOSE).greet().raw(new byte[] {0x49, 0x48, 0x41, 0x56}).build());
        seeds.add(new Builder(Ending.HALF_CLOSE).build()); // connects, sends nothing
        return seeds.stream().map(b -> Arguments.of((Object) b));
    }
}
