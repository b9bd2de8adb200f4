package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.FileDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.bufio.BufferCache;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import java.io.PrintWriter;
import java.io.RandomAccessFile;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code blkstack thin check}: clean metadata written by a pool on file devices exits 0, through
 * the metadata file and through a configuration naming the pool; a set needs_check flag exits 2
 * until {@code --clear-needs-check}; a flipped bit in a tree node or the superblock exits 2 naming
 * the block; a corrupted superblock magic exits 2 and says what is wrong.
 */
class ThinCheckCommandTest {

    @Test
    void cleanMetadataPassesAndCorruptionIsReported(@TempDir Path dir) throws Exception {
        Path metaFile = dir.resolve("meta.img");
        Path dataFile = dir.resolve("data.img");
        try (TestKernel tk = new TestKernel("thin-check-cli", 32L << 20, Policies.defaults(), Faults.NONE)) {
            FileDevice.Options opts = FileDevice.Options.defaults().withCreate(true);
            Map<String, BlockDevice> devices = new HashMap<>();
            devices.put("meta", FileDevice.open(tk.kernel, "meta", metaFile, 1L << 20, opts));
            devices.put("data", FileDevice.open(tk.kernel, "data", dataFile, 4L << 20, opts));
            MappedDevice pool = new MappedDevice(tk.kernel, "pool",
                    Table.parse(tk.kernel, "pool", "0 8192 thin-pool meta data 128 0", devices::get));
            devices.put("pool", pool);
            MappedDevice thin = new MappedDevice(tk.kernel, "thin",
                    Table.parse(tk.kernel, "thin", "0 16384 thin pool 0", devices::get));
            BioSet client = new BioSet(tk.kernel, "client", 2, 2, null, false);
            ThinIo io = new ThinIo(tk.kernel, client);
            for (int i = 0; i < 10; i++) {
                assertEquals(BioStatus.OK, io.write(thin, i * 1000L, ThinTargetTest.pattern(i, 4096), 0));
            }
            assertEquals(BioStatus.OK, io.flush(thin));
            thin.close();
            pool.close();
            client.close();
            devices.get("meta").close();
            devices.get("data").close();
        }
        assertEquals(0, run(metaFile.toString()).code, "clean metadata");
        Path config = dir.resolve("pool.yaml");
        Files.writeString(config, "devices:\n  meta: { file: meta.img, size: 1MiB }\n  data: { file: data.img, size: 4MiB }\n"
                + "mapped:\n  pool: |\n    0 8192 thin-pool meta data 128 0\n  thin: |\n    0 16384 thin pool 0\n"
                + "exports:\n  thin: { device: thin }\n");
        assertEquals(0, run(config.toString(), "--pool", "pool").code, "through the configuration");
        assertEquals(1, run(config.toString(), "--pool", "nope").code, "unknown pool");

        // A pool that hit a metadata error leaves needs_check: reported, and cleared on request.
        try (TestKernel tk = new TestKernel("thin-check-flag", 32L << 20, Policies.defaults(), Faults.NONE)) {
            FileDevice dev = FileDevice.open(tk.kernel, "meta", metaFile, 1L << 20, FileDevice.Options.defaults());
            try (BufferCache cache = new BufferCache(dev, Pool.METADATA_BLOCK_SIZE)) {
                ThinMetadata.open(cache).setNeedsCheck(true);
            } finally {
                dev.close();
            }
        }
        Result flagged = run(metaFile.toString());
        assertEquals(2, flagged.code, flagged.out + flagged.err);
        assertTrue(flagged.err.contains("needs_check flag set"), flagged.err);
        Result cleared = run(metaFile.toString(), "--clear-needs-check");
        assertEquals(0, cleared.code, cleared.out + cleared.err);
        assertTrue(cleared.out.contains("needs_check cleared"), cleared.out);
        assertEquals(0, run(metaFile.toString()).code, "clean after clearing");

        // One flipped bit in the mapping tree's root and one in the superblock's unused tail: both named.
        long mappingRoot;
        try (RandomAccessFile f = new RandomAccessFile(metaFile.toFile(), "rw")) {
            f.seek(24);
            mappingRoot = f.readLong();
            flipBit(f, mappingRoot * Pool.METADATA_BLOCK_SIZE + 3000);
        }
        Result node = run(metaFile.toString());
        assertEquals(2, node.code, node.out + node.err);
        assertTrue(node.err.contains("mapping tree: metadata block " + mappingRoot + ": checksum mismatch"), node.err);
        try (RandomAccessFile f = new RandomAccessFile(metaFile.toFile(), "rw")) {
            flipBit(f, 2000);
        }
        Result superblock = run(metaFile.toString());
        assertEquals(2, superblock.code, superblock.out + superblock.err);
        assertTrue(superblock.err.contains("superblock (metadata block 0): checksum mismatch"), superblock.err);

        try (RandomAccessFile f = new RandomAccessFile(metaFile.toFile(), "rw")) {
            f.seek(0);
            f.writeLong(0x1234L);
        }
        Result bad = run(metaFile.toString());
        assertEquals(2, bad.code);
        assertTrue(bad.err.contains("superblock magic"), bad.err);
    }

    private record Result(int code, String out, String err) {
    }

    private static void flipBit(RandomAccessFile f, long byteOffset) throws java.io.IOException {
        f.seek(byteOffset);
        int b = f.read();
        f.seek(byteOffset);
        f.write(b ^ 0x10);
    }

    private static Result run(String... args) {
        CommandLine cl = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        String[] all = new String[args.length + 2];
        all[0] = "thin";
        all[1] = "check";
        System.arraycopy(args, 0, all, 2, args.length);
        int code = cl.execute(all);
        return new Result(code, out.toString(), err.toString());
    }
}
