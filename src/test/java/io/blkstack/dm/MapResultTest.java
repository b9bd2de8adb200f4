package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.SpinLock;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * REQUEUE: a target that asks for every fragment to be mapped again once gets each fragment back
 * from the workqueue, and the original still completes OK with its data in place.
 */
class MapResultTest {

    /** Requeues every clone the first time it sees it, then remaps it like linear at offset 0. */
    private static final class RequeueOnceTarget extends Target {
        private final BlockDevice device;
        final AtomicInteger requeues = new AtomicInteger();

        RequeueOnceTarget(TargetArgs args) throws TableException {
            super(args);
            args.requireCount(1, "<dev>");
            device = args.device(1);
        }

        @Override
        protected Object newPerBioData() {
            return new boolean[1];
        }

        @Override
        public MapResult map(Bio clone, TargetIo io) {
            boolean[] seen = io.perBioData();
            if (!seen[0]) {
                seen[0] = true;
                requeues.incrementAndGet();
                return MapResult.REQUEUE;
            }
            seen[0] = false;
            clone.setDevice(device).setSector(targetOffset(clone));
            return MapResult.REMAPPED;
        }

        @Override
        public String statusTable() {
            return device.name();
        }
    }

    @Test
    void requeuedFragmentsAreMappedAgainAndComplete() throws TableException {
        TargetRegistry registry = TargetRegistry.withDefaults();
        List<RequeueOnceTarget> built = new ArrayList<>();
        registry.register("requeue-once", args -> {
            RequeueOnceTarget t = new RequeueOnceTarget(args);
            built.add(t);
            return t;
        });
        try (TestKernel tk = new TestKernel("requeue"); DataBuffers buffers = new DataBuffers(tk.kernel)) {
            RecordingDevice a = new RecordingDevice(tk.kernel, "a", 256, new ArrayList<>(), new SpinLock("log"));
            MappedDevice md = new MappedDevice(tk.kernel, "dm",
                    Table.parse(tk.kernel, "dm", "0 64 requeue-once a\n64 64 linear a 64\n",
                            n -> n.equals("a") ? a : null, registry));
            DmIo io = new DmIo(new BioSet(tk.kernel, "client", 2, 2, null, false), buffers);
            byte[] data = new byte[100 * Bio.SECTOR_SIZE];
            new Random(9).nextBytes(data);
            assertEquals(BioStatus.OK, io.write(md, 10, data, 0, null));
            assertEquals(1, built.get(0).requeues.get());
            assertArrayEquals(data, Arrays.copyOfRange(a.data(), 10 * 512, 110 * 512));
            assertEquals(0, md.heldCount());
            assertEquals(0, md.inFlight());
        }
    }
}
