package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.simple.LinearTarget;
import io.blkstack.dm.simple.StripedTarget;
import io.blkstack.kernel.SpinLock;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;

/**
 * Linear and striped mapping against reference models. The striped model lays the target out the
 * way a reader of the dm documentation would, chunk after chunk, each stripe's cursor advancing by
 * a chunk: sector -> (stripe, device sector). The I/O properties write a random range through a
 * mapped device and check every sector's bytes at the place the model says on the bottom devices.
 */
class MappingPropertiesTest {

    /** The reference layout: for each target sector, {stripe, device sector}. */
    private static long[][] stripedModel(int stripes, int chunk, long length, long[] offsets) {
        long[][] where = new long[(int) length][];
        long[] cursor = offsets.clone();
        int stripe = 0;
        for (long s = 0; s < length; s += chunk) {
            for (int i = 0; i < chunk; i++) {
                where[(int) (s + i)] = new long[] {stripe, cursor[stripe] + i};
            }
            cursor[stripe] += chunk;
            stripe = (stripe + 1) % stripes;
        }
        return where;
    }

    private static String stripedTable(int stripes, int chunk, long length, long[] offsets) {
        StringBuilder sb = new StringBuilder("0 " + length + " striped " + stripes + " " + chunk);
        for (int i = 0; i < stripes; i++) {
            sb.append(" d").append(i).append(' ').append(offsets[i]);
        }
        return sb.append('\n').toString();
    }

    @Property(tries = 100)
    void stripedMapsLikeTheModel(@ForAll @IntRange(min = 1, max = 5) int stripes,
            @ForAll @IntRange(min = 1, max = 9) int chunkPages, @ForAll @IntRange(min = 1, max = 6) int rows,
            @ForAll long seed) throws TableException {
        int chunk = chunkPages * 8;
        long length = (long) chunk * stripes * rows;
        Random random = new Random(seed);
        long[] offsets = new long[stripes];
        for (int i = 0; i < stripes; i++) {
            offsets[i] = random.nextInt(64);
        }
        long[][] model = stripedModel(stripes, chunk, length, offsets);
        try (TestKernel tk = new TestKernel("striped-model")) {
            Map<String, BlockDevice> devs = new HashMap<>();
            for (int i = 0; i < stripes; i++) {
                devs.put("d" + i, new io.blkstack.block.NullDevice(tk.kernel, "d" + i, 1 << 20, 0));
            }
            try (Table t = Table.parse(tk.kernel, "dm", stripedTable(stripes, chunk, length, offsets), devs::get)) {
                StripedTarget st = (StripedTarget) t.target(0);
                for (long s = 0; s < length; s++) {
                    assertEquals(model[(int) s][0], st.stripeOf(s), "stripe of " + s);
                    assertEquals(model[(int) s][1], st.deviceSectorOf(s), "device sector of " + s);
                    assertEquals(chunk - s % chunk, st.maxIoSectors(s), "boundary after " + s);
                }
            }
        }
    }

    @Property(tries = 100)
    void linearMapsLikeTheModel(@ForAll @IntRange(min = 0, max = 500) int begin,
            @ForAll @IntRange(min = 1, max = 500) int length, @ForAll @IntRange(min = 0, max = 1000) int offset)
            throws TableException {
        try (TestKernel tk = new TestKernel("linear-model")) {
            BlockDevice dev = new io.blkstack.block.NullDevice(tk.kernel, "a", 1 << 20, 0);
            String text = (begin > 0 ? "0 " + begin + " zero\n" : "") + begin + " " + length + " linear a " + offset;
            try (Table t = Table.parse(tk.kernel, "dm", text, n -> n.equals("a") ? dev : null)) {
                LinearTarget lt = (LinearTarget) t.targetAt(begin);
                for (long s = begin; s < begin + length; s++) {
                    assertEquals(offset + (s - begin), lt.mapSector(s));
                    assertEquals(lt, t.targetAt(s));
                }
            }
        }
    }

    @Property(tries = 40)
    void stripedIoLandsWhereTheModelSays(@ForAll @IntRange(min = 1, max = 4) int stripes,
            @ForAll @IntRange(min = 1, max = 4) int chunkPages, @ForAll long seed) throws TableException {
        int chunk = chunkPages * 8;
        int rows = 4;
        long length = (long) chunk * stripes * rows;
        Random random = new Random(seed);
        long[] offsets = new long[stripes];
        for (int i = 0; i < stripes; i++) {
            offsets[i] = random.nextInt(32);
        }
        long[][] model = stripedModel(stripes, chunk, length, offsets);
        try (TestKernel tk = new TestKernel("striped-io"); DataBuffers buffers = new DataBuffers(tk.kernel)) {
            List<String> log = new ArrayList<>();
            SpinLock logLock = new SpinLock("log");
            Map<String, BlockDevice> devs = new HashMap<>();
            RecordingDevice[] bottoms = new RecordingDevice[stripes];
            for (int i = 0; i < stripes; i++) {
                bottoms[i] = new RecordingDevice(tk.kernel, "d" + i, 256, log, logLock);
                devs.put("d" + i, bottoms[i]);
            }
            MappedDevice md = new MappedDevice(tk.kernel, "dm",
                    Table.parse(tk.kernel, "dm", stripedTable(stripes, chunk, length, offsets), devs::get));
            BioSet client = new BioSet(tk.kernel, "client", 2, 2, null, false);
            DmIo io = new DmIo(client, buffers);
            int start = random.nextInt((int) length);
            int sectors = 1 + random.nextInt((int) Math.min(length - start, 200));
            byte[] data = new byte[sectors * Bio.SECTOR_SIZE];
            random.nextBytes(data);
            assertEquals(BioStatus.OK, io.write(md, start, data, 0, random));
            for (int s = 0; s < sectors; s++) {
                long[] at = model[start + s];
                byte[] dev = bottoms[(int) at[0]].data();
                assertArrayEquals(Arrays.copyOfRange(data, s * 512, s * 512 + 512),
                        Arrays.copyOfRange(dev, (int) at[1] * 512, (int) at[1] * 512 + 512), "sector " + (start + s));
            }
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, io.read(md, start, back, random));
            assertArrayEquals(data, back);
        }
    }
}
