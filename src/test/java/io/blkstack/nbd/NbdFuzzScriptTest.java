package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdFuzzScript.Builder;
import io.blkstack.nbd.NbdFuzzScript.Ending;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Plain tests of {@link NbdFuzzScript}'s encoding through {@link NbdProtocolFuzzTest}'s session,
 * without Jazzer (a class of its own, so that {@code scripts/fuzz}, which runs only the fuzz test's
 * class, never runs them).
 */
class NbdFuzzScriptTest {

    private TestKernel tk;

    @AfterEach
    void closeKernel() {
        if (tk != null) {
            tk.close(); // throws if any page, bio or pool element was not returned
        }
    }

    /**
     * Proves the seed encoding reaches the transmission phase, so the corpus is not vacuous: the
     * happy-path program (GO with structured replies, WRITE 8 KiB, READ it back, BLOCK_STATUS,
     * FLUSH, DISC) gets at least the 8 KiB of its READ back from the server; the same program
     * naming an export that does not exist gets far less (the count tells them apart).
     */
    @Test
    void happyPathSeedGetsItsReadDataBack() throws Exception {
        tk = new TestKernel("nbd-fuzz-script", 16L << 20, Policies.defaults(), Faults.NONE);
        List<Export> exports = List.of(
                new Export("fuzz", new MemoryDevice(tk.kernel, "dev-fuzz", NbdProtocolFuzzTest.FUZZ_EXPORT_BYTES, 0),
                        false, ""),
                new Export(NbdProtocolFuzzTest.GOOD_EXPORT, new MemoryDevice(tk.kernel, "dev-good", 1L << 20, 0),
                        false, ""));
        long served = receivedBy(exports, 0);
        assertTrue(served > 8192 + 18, "the fuzzed client got " + served + " bytes");
        long refused = receivedBy(exports, 5); // "fuzz\0x": no such export
        assertTrue(refused < 8192, "a client refused its export got " + refused + " bytes");
    }

    /** Bytes the happy-path program on export choice {@code name} gets from the server. */
    private long receivedBy(List<Export> exports, int name) throws Exception {
        byte[] seed = new Builder(Ending.HALF_CLOSE).greet().go(name, true, true, false, false)
                .request(0, 1, 1, 0, 3, 0, 1, 0, 0).request(0, 0, 2, 0, 3, 0, 1, 0, 0)
                .request(0, 7, 3, 0, 0, 0, 15, 0, 0).request(0, 3, 4, 0, 0, 2, 0, 0, 0).disc().build();
        return NbdProtocolFuzzTest.Session.run(tk.kernel, exports, new CopyOnWriteArrayList<>(), seed, false)
                .received.get();
    }
}
