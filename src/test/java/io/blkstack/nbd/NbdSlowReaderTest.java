package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A client that sends READs and never reads the replies, next to a well-behaved client (found
 * while writing {@link NbdProtocolFuzzTest}, whose fuzzed client always drains its replies for
 * this reason). The slow client's admitted READs keep their pages until their replies leave and
 * its reader then waits for more; with a server-wide budget and no share per connection, a
 * well-behaved client's 1 MiB WRITE waited behind it for as long as the slow client stayed
 * connected. With the fair share (issue 12, bullet 3; {@code NbdServer.PayloadBudget}) a
 * connection leaves room for another's maximum request, so the write completes.
 */
class NbdSlowReaderTest {

    private static final long MiB = 1L << 20;

    private TestKernel tk;
    private NbdServer server;

    @AfterEach
    void tearDown() {
        ServerTeardown.close(server, tk);
    }

    /**
     * Proves a client that stops reading cannot hold back another client's maximum-size request:
     * the slow client sends 64 READs of 1 MiB on a 16 MiB arena (about 12 MiB of budget) and reads
     * nothing; once its reader waits on the budget (observed, not guessed), the good client writes
     * 1 MiB, which must complete while the slow client is still connected. The bound is only a hang
     * detector: without the fair share the write completed only after the slow client disconnected.
     */
    @Test
    void aClientThatNeverReadsItsRepliesDoesNotStarveAnother() throws Exception {
        tk = new TestKernel("nbd-slow-reader", 16 * MiB, Policies.defaults(), Faults.NONE);
        server = new NbdServer(tk.kernel, List.of(
                new Export("slow", new MemoryDevice(tk.kernel, "dev-slow", 64 * MiB, 0), false, ""),
                new Export("good", new MemoryDevice(tk.kernel, "dev-good", MiB, 0), false, "")),
                new InetSocketAddress("127.0.0.1", 0));
        server.start();
        try (NbdTestClient slow = new NbdTestClient(server.localAddress()).greet();
                NbdTestClient good = new NbdTestClient(server.localAddress()).greet()) {
            slow.go("slow");
            for (int i = 0; i < 64; i++) {
                slow.request(0, CMD_READ, i, i * MiB, (int) MiB, null);
            }
            Task slowReader = tk.kernel.scheduler().tasks().stream()
                    .filter(t -> t.name().equals("nbd-1-reader")).findFirst().orElseThrow();
            assertNotNull(slowReader.awaitWait(what -> what == server.budget(), 30_000_000_000L),
                    "the slow client's reader never waited on the payload budget: " + server.describeState());

            good.go("good");
            AtomicInteger error = new AtomicInteger(-1);
            Thread writer = Thread.ofPlatform().start(() -> {
                try {
                    error.set(good.writeSync(0, new byte[(int) MiB], 0));
                } catch (Exception e) {
                    error.set(-2);
                }
            });
            boolean done = writer.join(Duration.ofSeconds(30));
            String state = server.describeState();
            slow.close(); // lets the write finish either way, so the server closes cleanly
            writer.join();
            assertTrue(done, "a 1 MiB write waited behind a client that reads nothing: " + state);
            assertEquals(0, error.get());
        }
    }
}
