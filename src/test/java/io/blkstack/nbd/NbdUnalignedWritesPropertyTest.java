package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/**
 * Concurrent unaligned writes never tear, against a byte-array model. Several clients, each on its
 * own connection and thread, write byte ranges that never overlap another client's bytes but share
 * logical blocks with them (so their read-modify-writes meet on the same blocks), and a client
 * sometimes rewrites part of its own range (a later write over an earlier one). Every range is
 * known, so the device must end up exactly as the model: every client's last bytes, and the base
 * pattern everywhere nobody wrote. A read-modify-write that ran between another's read and write
 * of a shared block would put old bytes back, and the comparison would show the lost update.
 */
class NbdUnalignedWritesPropertyTest {

    private static final long MiB = 1L << 20;
    /** Clients writing at once. */
    private static final int WRITERS = 4;
    /** Bytes of the device; the plan's ranges stay well inside it. */
    private static final int DEVICE_BYTES = 256 * 1024;
    /** Where the ranges start, at most one page further. */
    private static final int BASE_OFFSET = 4096;
    /** Bound on a client's whole run: a hang guard, not a timing assertion. */
    private static final long CLIENT_SECONDS_MAX = 120;

    /**
     * One range of the plan: {@code gap} untouched bytes, then {@code length} bytes written by
     * {@code writer}; if {@code rewrite}, the writer then writes its last two thirds again.
     */
    record Segment(int gap, int length, int writer, boolean rewrite, long seed) {
    }

    /** One write a client makes, in its order. */
    record Write(long offset, byte[] data) {
    }

    @Provide
    Arbitrary<List<Segment>> plans() {
        Arbitrary<Segment> segment = Combinators.combine(
                Arbitraries.integers().between(0, 700),
                Arbitraries.integers().between(1, 1500),
                Arbitraries.integers().between(0, WRITERS - 1),
                Arbitraries.of(false, true),
                Arbitraries.longs())
                .as(Segment::new);
        return segment.list().ofMinSize(2).ofMaxSize(40);
    }

    @Property(tries = 40)
    void concurrentOverlappingUnalignedWritesMatchTheModel(@ForAll("plans") List<Segment> plan,
            @ForAll @IntRange(min = 0, max = 4095) int shift, @ForAll boolean slowDevice) throws Exception {
        byte[] model = new byte[DEVICE_BYTES];
        new Random(shift).nextBytes(model);
        List<List<Write>> perWriter = new ArrayList<>();
        for (int w = 0; w < WRITERS; w++) {
            perWriter.add(new ArrayList<>());
        }
        long offset = BASE_OFFSET + shift;
        for (Segment s : plan) {
            offset += s.gap();
            Random data = new Random(s.seed());
            byte[] first = new byte[s.length()];
            data.nextBytes(first);
            perWriter.get(s.writer()).add(new Write(offset, first));
            System.arraycopy(first, 0, model, (int) offset, first.length);
            if (s.rewrite()) {
                int from = s.length() / 3;
                byte[] again = new byte[s.length() - from];
                data.nextBytes(again);
                perWriter.get(s.writer()).add(new Write(offset + from, again));
                System.arraycopy(again, 0, model, (int) offset + from, again.length);
            }
            offset += s.length();
        }

        try (TestKernel tk = new TestKernel("nbd-unaligned-property", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            MemoryDevice device = new MemoryDevice(tk.kernel, "mem", DEVICE_BYTES, slowDevice ? 20_000 : 0);
            NbdServer server = new NbdServer(tk.kernel, List.of(new Export("a", device, false, "")),
                    new InetSocketAddress("127.0.0.1", 0));
            ExecutorService clients = Executors.newFixedThreadPool(WRITERS);
            try {
                server.start();
                InetSocketAddress addr = server.localAddress();
                byte[] base = new byte[DEVICE_BYTES];
                new Random(shift).nextBytes(base);
                try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                    c.go("a");
                    assertEquals(0, c.writeSync(0, base, 0));
                }
                CountDownLatch go = new CountDownLatch(1);
                List<Future<String>> results = new ArrayList<>();
                for (List<Write> writes : perWriter) {
                    results.add(clients.submit(() -> {
                        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                            c.go("a");
                            go.await();
                            for (Write w : writes) {
                                int error = c.writeSync(w.offset(), w.data(), 0);
                                if (error != 0) {
                                    return "write of " + w.data().length + " at " + w.offset() + ": error " + error;
                                }
                            }
                            return "";
                        }
                    }));
                }
                go.countDown();
                for (Future<String> r : results) {
                    assertEquals("", r.get(CLIENT_SECONDS_MAX, TimeUnit.SECONDS));
                }
                try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                    c.goStructured("a");
                    byte[] back = c.readSync(0, DEVICE_BYTES);
                    for (int i = 0; i < DEVICE_BYTES; i++) {
                        if (back[i] != model[i]) {
                            assertEquals(model[i], back[i], "first difference from the model at byte " + i);
                        }
                    }
                    assertArrayEquals(model, back);
                }
                assertEquals(0, device.trackedRequests().count(), "no write left tracked");
            } finally {
                clients.shutdownNow();
                server.close();
            }
        }
    }
}
