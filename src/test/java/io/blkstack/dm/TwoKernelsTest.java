package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.snapshot.OriginRegistry;
import io.blkstack.dm.thin.PoolRegistry;
import io.blkstack.kernel.Kernel;
import io.blkstack.wq.WorkerPool;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * DESIGN.md section 2: one kernel is one independent block layer. Two kernels in one JVM build the
 * same stacks under the same device names (a thin pool called {@code pool} with a thin device,
 * and a snapshot-origin with a snapshot) and must share nothing: not the thin pool table, not the
 * snapshot origins, not the worker pool, not the target types.
 */
class TwoKernelsTest {

    private static final long THIN_SECTORS = 512;
    private static final long ORIGIN_SECTORS = 256;
    private static final int BYTES = 4096;

    /** One kernel with the two stacks, built the same way in each. */
    private static final class Machine {
        final Kernel kernel;
        final Map<String, BlockDevice> devices = new HashMap<>();
        final DataBuffers buffers;
        final BioSet client;

        Machine(String name) throws TableException {
            kernel = Kernel.builder().name(name).memory(32L << 20).build();
            try (Kernel.Attachment self = kernel.attach("build")) {
                add(new MemoryDevice(kernel, "meta", 1L << 20, 0));
                add(new MemoryDevice(kernel, "data", 4L << 20, 0));
                add(new MemoryDevice(kernel, "origin", ORIGIN_SECTORS * 512, 0));
                add(new MemoryDevice(kernel, "cow", 1L << 20, 0));
                MappedDevice pool = map("pool", "0 8192 thin-pool meta data 16 4");
                pool.message(0, "create_thin", "1");
                map("thin", "0 " + THIN_SECTORS + " thin pool 1");
                map("o", "0 " + ORIGIN_SECTORS + " snapshot-origin origin");
                map("s", "0 " + ORIGIN_SECTORS + " snapshot origin cow P 8");
                buffers = new DataBuffers(kernel);
                client = new BioSet(kernel, "client", 4, 4, null, false);
            }
        }

        private void add(BlockDevice device) {
            devices.put(device.name(), device);
        }

        private MappedDevice map(String name, String table) throws TableException {
            MappedDevice md = new MappedDevice(kernel, name, Table.parse(kernel, name, table, devices::get));
            add(md);
            return md;
        }

        /** Writes {@code data} at sector 0 of {@code device}, as a task of this kernel. */
        void write(String device, byte[] data) {
            try (Kernel.Attachment self = kernel.attach("write " + device)) {
                Bio bio = buffers.bio(client, devices.get(device), BioOp.WRITE, 0, data.length, null);
                bio.copyFrom(data, 0);
                BioStatus status = Submit.submitAndWaitStatus(bio);
                bio.put();
                assertEquals(BioStatus.OK, status, "write to " + device + " of " + kernel);
            }
        }

        /** Reads {@link #BYTES} at sector 0 of {@code device}, as a task of this kernel. */
        byte[] read(String device) {
            try (Kernel.Attachment self = kernel.attach("read " + device)) {
                Bio bio = buffers.bio(client, devices.get(device), BioOp.READ, 0, BYTES, null);
                BioStatus status = Submit.submitAndWaitStatus(bio);
                byte[] got = DataBuffers.contents(bio);
                bio.put();
                assertEquals(BioStatus.OK, status, "read of " + device + " of " + kernel);
                return got;
            }
        }

        /** Closes the client's buffers and bio set, then the kernel (which closes every device). */
        void close() {
            try (Kernel.Attachment self = kernel.attach("close")) {
                client.close();
                buffers.close();
            }
            kernel.close();
        }
    }

    private static byte[] filled(int value) {
        byte[] b = new byte[BYTES];
        Arrays.fill(b, (byte) value);
        return b;
    }

    // Proves the isolation: two kernels build identically named thin and snapshot stacks (a
    // process-wide pool table would refuse the second 'pool' or hand it the first kernel's pool),
    // write different data through both, and each reads back its own. The per-kernel tables are
    // distinct objects. Then one kernel closes (its close checks its tables are empty) and the
    // other goes on: new thin blocks are provisioned, origin writes still copy out to its
    // snapshot, and it closes cleanly too.
    @Test
    void twoKernelsShareNothing() throws TableException {
        Machine a = new Machine("a");
        Machine b = new Machine("b");
        try {
            assertNotSame(PoolRegistry.of(a.kernel), PoolRegistry.of(b.kernel));
            assertNotSame(OriginRegistry.of(a.kernel), OriginRegistry.of(b.kernel));
            assertNotSame(TargetRegistry.of(a.kernel), TargetRegistry.of(b.kernel));
            assertEquals(1, OriginRegistry.of(a.kernel).snapshotsOf(a.devices.get("origin")).length);
            assertEquals(0, OriginRegistry.of(a.kernel).snapshotsOf(b.devices.get("origin")).length);

            a.write("thin", filled(0xa1));
            b.write("thin", filled(0xb1));
            a.write("o", filled(0xa2));
            b.write("o", filled(0xb2));
            assertArrayEquals(filled(0xa1), a.read("thin"));
            assertArrayEquals(filled(0xb1), b.read("thin"));
            assertArrayEquals(filled(0xa2), a.read("o"));
            assertArrayEquals(filled(0xb2), b.read("o"));
            assertArrayEquals(filled(0), a.read("s"), "a's snapshot keeps the origin as it was");
            assertArrayEquals(filled(0), b.read("s"), "b's snapshot keeps the origin as it was");
            WorkerPool poolOfB = WorkerPool.of(b.kernel);
            assertNotSame(WorkerPool.of(a.kernel), poolOfB);

            a.close();
            assertTrue(a.kernel.isClosed());
            assertThrows(IllegalStateException.class, () -> PoolRegistry.of(a.kernel));

            b.write("thin", filled(0xb3));
            b.write("o", filled(0xb4));
            assertArrayEquals(filled(0xb3), b.read("thin"));
            assertArrayEquals(filled(0xb4), b.read("o"));
            assertArrayEquals(filled(0), b.read("s"), "b's snapshot still keeps the first origin contents");
            assertNotNull(b.devices.get("pool"));
            assertEquals(poolOfB, WorkerPool.of(b.kernel));
        } finally {
            if (!a.kernel.isClosed()) {
                a.close();
            }
            b.close();
        }
    }
}
