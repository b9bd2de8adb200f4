package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.HoldingDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Predicate;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A commit asked for by the control path (a pool message) makes durable only mappings whose data
 * its data-device flush covered. Proves it by holding that flush: a first write issued meanwhile
 * goes as far as it can, then the flush is let go, and the metadata the commit left on the disk
 * must not map the write's block (its data, written after the flush began, may not be durable). A
 * commit that ran beside the pool's worker committed that mapping.
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ThinCommitOrderTest {

    static final int META_BYTES = 512 * 1024;
    static final long DATA_SECTORS = 1024; // 64 blocks of 8 KiB
    static final long SECOND = 1_000_000_000L;

    /**
     * A pool named {@code name} over a metadata disk on {@code metaBytes} and a data disk that
     * holds the FLUSH bios {@code flushes} accepts (asked on the submitting task); it puts them in
     * {@code devices} as {@code meta}, {@code data} and {@code pool}.
     */
    private static MappedDevice poolOver(TestKernel tk, String name, byte[] metaBytes, Map<String, BlockDevice> devices,
            Predicate<Bio> flushes) throws Exception {
        devices.put("meta", new JournalDisk(tk.kernel, name + "-meta", metaBytes, 0, null));
        devices.put("data", new HoldingDevice(tk.kernel, name + "-data", DATA_SECTORS, true,
                bio -> bio.op() == BioOp.FLUSH && flushes.test(bio)));
        MappedDevice pool = new MappedDevice(tk.kernel, name,
                Table.parse(tk.kernel, name, "0 1024 thin-pool meta data 16 0", devices::get));
        devices.put("pool", pool);
        return pool;
    }

    @Test
    void aMessagesCommitNeverMapsAWriteThatFinishedAfterItsFlushBegan() throws Exception {
        try (TestKernel tk = new TestKernel("thin-commit-order", 32L << 20, Policies.defaults(), Faults.NONE)) {
            BioSet client = new BioSet(tk.kernel, "client", 4, 4, null, false);
            ThinIo io = new ThinIo(tk.kernel, client);
            byte[] metaBytes = new byte[META_BYTES];
            Map<String, BlockDevice> devices = new HashMap<>();
            // Flushes are held once armed; the task that submitted the first one held is the
            // control task or the pool's worker.
            AtomicBoolean armed = new AtomicBoolean();
            AtomicReference<Task> firstHeldBy = new AtomicReference<>();
            MappedDevice pool = poolOver(tk, "pool", metaBytes, devices, bio -> {
                if (!armed.get()) {
                    return false;
                }
                firstHeldBy.compareAndSet(null, Task.current());
                return true;
            });
            BlockDevice meta = devices.get("meta");
            HoldingDevice data = (HoldingDevice) devices.get("data");
            MappedDevice thin = new MappedDevice(tk.kernel, "thin", Table.parse(tk.kernel, "thin", "0 512 thin pool 1", devices::get));
            Pool runtime = ((ThinPoolTarget) pool.table().target(0)).pool();

            armed.set(true);
            Task ctl = tk.kernel.spawn("ctl", TaskKind.USER, () -> runtime.message(new String[] {"create_thin", "2"}));
            data.awaitHeld(1);
            AtomicReference<BioStatus> written = new AtomicReference<>();
            Task writer = tk.kernel.spawn("writer", TaskKind.USER,
                    () -> written.set(io.write(thin, 0, ThinTargetTest.pattern(7, 4096), 0)));
            // Let the write go as far as it can while the commit's flush is held: if the commit
            // runs on its own task, the worker provisions the block, the write lands and its
            // mapping goes in; if it runs on the worker, the write waits behind it.
            if (firstHeldBy.get() == ctl) {
                tk.kernel.scheduler().join(writer); // it ends only after its mapping went in
            } else {
                assertNotNull(writer.awaitWait(what -> true, 30 * SECOND), "the writer never waited");
            }
            data.releaseOne();
            tk.kernel.scheduler().join(ctl);
            byte[] committed = Arrays.copyOf(metaBytes, META_BYTES); // later commits wait at their held flush

            data.openAll();
            tk.kernel.scheduler().join(writer);
            assertEquals(BioStatus.OK, written.get());
            thin.close();
            pool.close();
            meta.close();
            data.close();

            Map<String, BlockDevice> after = new HashMap<>();
            MappedDevice reopened = poolOver(tk, "pool2", committed, after, bio -> false);
            Pool runtime2 = ((ThinPoolTarget) reopened.table().target(0)).pool();
            assertTrue(runtime2.metadata().deviceExists(2), "the message's change was committed");
            assertEquals(-1, runtime2.metadata().lookup(1, 0),
                    "the commit made durable the mapping of a write its data flush did not cover");
            assertEquals(List.of(), runtime2.check());
            reopened.close();
            after.get("meta").close();
            after.get("data").close();
            client.close();
        }
    }
}
