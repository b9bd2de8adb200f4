package io.blkstack.bio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.mem.Gfp;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.function.Consumer;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The forward-progress machinery shows up on a JFR recording: a bio set whose allocator always
 * fails (fault injection on its non-blocking allocations, as in {@link BioSetRescuerTest}) serves
 * from its mempool reserve, and once the reserve is held by the task's own pending bios the next
 * allocation punts them to the rescuer. The recording is started in-process, the file read back
 * with {@link RecordingFile}, and the events' fields checked against what the test did.
 */
class ForwardProgressEventsTest {

    /** Every non-blocking allocation from S's bio pool fails: its reserve is the only source. */
    private static final Faults S_EXHAUSTED = new Faults() {
        @Override
        public boolean shouldFail(String site) {
            return site.equals("alloc:S-bio");
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    };

    /** Completes each bio, or runs a per-test behaviour. */
    private static final class ScriptDevice extends BlockDevice {
        Consumer<Bio> behaviour = Bio::endio;

        ScriptDevice(Kernel kernel, String name) {
            super(kernel, name, 1024, QueueLimits.defaults());
        }

        @Override
        protected void submitBio(Bio bio) {
            behaviour.accept(bio);
        }
    }

    @TempDir
    Path tmp;

    // Proves: three allocations from S (reserve 3) leave three reserve-use events with the pool's
    // name and the reserve counting down 2, 1, 0; the fourth, made while those three bios are
    // still pending on the task, punts all three to the rescuer (one punt event, 3 bios) and then
    // gets its bio (from the blocking retry, or from the reserve the rescuer's completions refill).
    @Test
    @Timeout(60)
    void reserveUseAndRescuerPuntAreRecorded() throws Exception {
        Path file = tmp.resolve("forward-progress.jfr");
        try (TestKernel tk = new TestKernel("jfr-rescuer", 16L << 20, Policies.defaults(), S_EXHAUSTED);
                Recording recording = new Recording()) {
            recording.enable("blkstack.MempoolReserveUse").withThreshold(Duration.ZERO);
            recording.enable("blkstack.BioRescuerPunt").withThreshold(Duration.ZERO);
            recording.start();
            Kernel k = tk.kernel;
            ScriptDevice bottom = new ScriptDevice(k, "bottom");
            ScriptDevice top = new ScriptDevice(k, "top");
            BioSet setT = new BioSet(k, "T", 4, 0, null, false);
            BioSet setS = new BioSet(k, "S", 3, 0, null, true);
            Completion done = new Completion("every bio");
            BioEndIo finish = b -> {
                b.put();
                done.complete();
            };
            top.behaviour = root -> {
                for (int i = 0; i < 3; i++) {
                    Submit.submitBio(setS.alloc(Gfp.NOIO, 0).init(bottom, BioOp.FLUSH, 0, 0).setEndIo(finish));
                }
                Bio fourth = setS.alloc(Gfp.NOIO, 0); // reserve empty, three pending: punt, then wait
                assertNotNull(fourth, "a blocking allocation returns a bio");
                fourth.put();
                root.endio();
            };
            Bio root = setT.alloc(Gfp.NOIO, 0);
            root.init(top, BioOp.FLUSH, 0, 0).setEndIo(finish);
            Submit.submitBio(root);
            for (int i = 0; i < 4; i++) {
                assertTrue(done.await(30_000_000_000L), "bio " + i + " did not complete within 30 s");
            }
            assertEquals(0, setS.outstanding());
            recording.stop();
            recording.dump(file);
            setS.close();
            setT.close();
        }
        List<RecordedEvent> events = RecordingFile.readAllEvents(file).stream()
                .sorted(java.util.Comparator.comparing(RecordedEvent::getStartTime)).toList();
        List<RecordedEvent> reserve = events.stream()
                .filter(e -> e.getEventType().getName().equals("blkstack.MempoolReserveUse"))
                .filter(e -> e.getString("pool").equals("S-bio")).toList();
        List<RecordedEvent> punts = events.stream()
                .filter(e -> e.getEventType().getName().equals("blkstack.BioRescuerPunt")).toList();
        // The fourth bio comes from the allocator's blocking retry, or from the reserve if the
        // rescuer's completions refilled it first: three or four reserve events, never more.
        assertTrue(reserve.size() == 3 || reserve.size() == 4, "reserve events: " + reserve);
        assertEquals(List.of(2, 1, 0), reserve.subList(0, 3).stream().map(e -> e.getInt("reserveLeft")).toList());
        for (RecordedEvent e : reserve) {
            assertEquals(3, e.getInt("reserveSize"), e.toString());
        }
        assertEquals(1, punts.size(), punts.toString());
        assertEquals("S", punts.get(0).getString("bioSet"));
        assertEquals(3, punts.get(0).getInt("bios"));
    }
}
