package io.blkstack.bio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
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
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * The bio set rescuer of seed 000. Pending lists are built for real, by submitting from inside
 * device calls; set S's non-blocking allocations always fail (fault injection) so its reserve of
 * three is the only source until a blocking retry, which mirrors a set whose reserve is held by
 * the task's own pending bios.
 */
class BioSetRescuerTest {

    /** Faults: every non-blocking allocation from S's bio pool fails. */
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

    /** A device that logs {@code name:tag@task} and runs a per-test behaviour (default: complete). */
    private static final class ScriptDevice extends BlockDevice {
        final List<String> log;
        Consumer<Bio> behaviour = Bio::endio;

        ScriptDevice(Kernel kernel, String name, List<String> log) {
            super(kernel, name, 1024, QueueLimits.defaults());
            this.log = log;
        }

        @Override
        protected void submitBio(Bio bio) {
            log.add(name() + ":" + tag(bio) + "@" + Task.current());
            behaviour.accept(bio);
        }
    }

    private static String tag(Bio bio) {
        String[] pad = bio.frontPad();
        return pad[0];
    }

    private static List<String> tags(BioList list) {
        List<String> out = new ArrayList<>();
        for (Bio b : list.toList()) {
            out.add(tag(b));
        }
        return out;
    }

    /** What the mid device saw of its task's pending lists right after the fifth allocation from S. */
    private List<String> lists0After;
    private List<String> lists1After;
    private String rescueStateOfS1;

    /**
     * Builds: top gets R and submits t1 s1 t2 s2 to mid; mid, handling t1, submits t3 s3 t4 to
     * bottom and then allocates once more from S. At that moment lists[0] = [t3 s3 t4] and
     * lists[1] = [s1 t2 s2]. Returns the device log after every bio completed.
     */
    private List<String> run(TestKernel tk) {
        Kernel k = tk.kernel;
        List<String> log = new CopyOnWriteArrayList<>();
        ScriptDevice bottom = new ScriptDevice(k, "bottom", log);
        ScriptDevice mid = new ScriptDevice(k, "mid", log);
        ScriptDevice top = new ScriptDevice(k, "top", log);
        BioSet setT = new BioSet(k, "T", 4, 0, () -> new String[1], false);
        BioSet setS = new BioSet(k, "S", 3, 0, () -> new String[1], true);
        Completion done = new Completion("all bios");
        BioEndIo finish = b -> {
            b.put();
            done.complete();
        };
        Bio[] s1 = new Bio[1];
        top.behaviour = r -> {
            submit(setT, "t1", mid, finish);
            s1[0] = submit(setS, "s1", mid, finish);
            submit(setT, "t2", mid, finish);
            submit(setS, "s2", mid, finish);
            r.endio();
        };
        mid.behaviour = b -> {
            if (tag(b).equals("t1")) {
                submit(setT, "t3", bottom, finish);
                submit(setS, "s3", bottom, finish);
                submit(setT, "t4", bottom, finish);
                Bio extra = setS.alloc(Gfp.NOIO, 0);
                assertNotNull(extra, "a blocking allocation returns a bio");
                BioList[] lists = Submit.pendingLists(Task.current());
                lists0After = tags(lists[0]);
                lists1After = tags(lists[1]);
                rescueStateOfS1 = s1[0].state() + " " + s1[0].describeHolder();
                extra.put();
            }
            b.endio();
        };
        Bio root = setT.alloc(Gfp.NOIO, 0);
        root.<String[]>frontPad()[0] = "R";
        root.init(top, BioOp.FLUSH, 0, 0).setEndIo(finish);
        Submit.submitBio(root);
        for (int i = 0; i < 8; i++) {
            done.await();
        }
        assertEquals(0, setS.outstanding());
        assertEquals(0, setT.outstanding());
        return log;
    }

    private static Bio submit(BioSet set, String tag, BlockDevice dev, BioEndIo endIo) {
        Bio bio = set.alloc(Gfp.NOIO, 0);
        bio.<String[]>frontPad()[0] = tag;
        bio.init(dev, BioOp.FLUSH, 0, 0).setEndIo(endIo);
        Submit.submitBio(bio);
        return bio;
    }

    @Test
    void puntsExactlyThisSetsPendingBiosAndKeepsTheOrderOfTheOthers() {
        try (TestKernel tk = new TestKernel("rescuer", 16L << 20, Policies.defaults(), S_EXHAUSTED)) {
            List<String> log = run(tk);
            assertEquals(List.of("t3", "t4"), lists0After, "lists[0] without S's bios, order kept");
            assertEquals(List.of("t2"), lists1After, "lists[1] without S's bios, order kept");
            assertEquals(3, tk.kernel.counters().value("bioset.rescuer-punts"));
            // The rescuer submitted them in rescue-list order (lists[0]'s first, then lists[1]'s),
            // from its own task.
            List<String> rescued = new ArrayList<>();
            for (String line : log) {
                if (line.contains(":s")) {
                    String task = line.substring(line.indexOf('@') + 1);
                    if (!line.startsWith("mid:s1@test") && !line.startsWith("mid:s2@test")) {
                        assertNotEquals("test", task.substring(0, task.indexOf('#')), line);
                    }
                    rescued.add(line.substring(0, line.indexOf('@')));
                }
            }
            assertEquals(List.of("bottom:s3", "mid:s1", "mid:s2"), rescued);
            // The test task handled the others depth-first.
            List<String> mine = new ArrayList<>();
            for (String line : log) {
                if (line.contains("@test#")) {
                    mine.add(line.substring(0, line.indexOf('@')));
                }
            }
            assertEquals(List.of("top:R", "mid:t1", "bottom:t3", "bottom:t4", "mid:t2"), mine);
        }
    }

    @Test
    void legacyPolicyNeverPunts() {
        Policies legacy = Policies.defaults().with(PolicySwitch.BIOSET_RESCUER, "legacy");
        try (TestKernel tk = new TestKernel("rescuer-legacy", 16L << 20, legacy, S_EXHAUSTED)) {
            List<String> log = run(tk);
            assertEquals(List.of("t3", "s3", "t4"), lists0After);
            assertEquals(List.of("s1", "t2", "s2"), lists1After);
            assertTrue(rescueStateOfS1.startsWith("PENDING"), rescueStateOfS1);
            assertEquals(0, tk.kernel.counters().value("bioset.rescuer-punts"));
            for (String line : log) {
                assertTrue(line.contains("@test#"), "everything ran on the submitting task: " + line);
            }
        }
    }

    @Test
    void allocationOutsideTheSubmitLoopNeverPunts() {
        try (TestKernel tk = new TestKernel("rescuer-outside", 16L << 20, Policies.defaults(), S_EXHAUSTED)) {
            BioSet setS = new BioSet(tk.kernel, "S", 3, 0, null, true);
            List<Bio> held = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                held.add(setS.alloc(Gfp.NOIO, 0));
            }
            assertEquals(0, tk.kernel.counters().value("bioset.rescuer-punts"));
            assertEquals(5, setS.outstanding());
            assertEquals(null, setS.alloc(Gfp.NOWAIT, 0), "non-blocking: reserve empty, allocator faulted");
            held.forEach(Bio::put);
        }
    }
}
