package io.blkstack.bufio;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;

/**
 * Reads one 4 KiB block of a device straight through the submit path, bypassing any cache, so a
 * test can see what really reached the device.
 */
public final class DeviceBlocks {

    private DeviceBlocks() {
    }

    /** Writes {@code data} ({@code Page.SIZE} bytes) to block {@code block} of the device, bypassing any cache. */
    public static void write(BioSet set, BlockDevice dev, long block, byte[] data) {
        if (data.length != Page.SIZE) {
            throw new IllegalArgumentException("block image of " + data.length + " bytes, expected " + Page.SIZE);
        }
        Page page = dev.kernel().pages().alloc(Gfp.KERNEL);
        Bio bio = set.alloc(Gfp.KERNEL, 1);
        try {
            page.buffer().put(0, data, 0, Page.SIZE);
            bio.init(dev, BioOp.WRITE, 0, block * (Page.SIZE / Bio.SECTOR_SIZE));
            bio.addPage(page, Page.SIZE, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (status != BioStatus.OK) {
                throw new AssertionError("write of block " + block + " on " + dev + ": " + status);
            }
        } finally {
            bio.put();
            dev.kernel().pages().free(page);
        }
    }

    /** The {@code Page.SIZE} bytes of block {@code block} as the device holds them. */
    public static byte[] read(BioSet set, BlockDevice dev, long block) {
        Page page = dev.kernel().pages().alloc(Gfp.KERNEL);
        Bio bio = set.alloc(Gfp.KERNEL, 1);
        try {
            bio.init(dev, BioOp.READ, 0, block * (Page.SIZE / Bio.SECTOR_SIZE));
            bio.addPage(page, Page.SIZE, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (status != BioStatus.OK) {
                throw new AssertionError("read of block " + block + " on " + dev + ": " + status);
            }
            byte[] out = new byte[Page.SIZE];
            page.buffer().get(0, out, 0, Page.SIZE);
            return out;
        } finally {
            bio.put();
            dev.kernel().pages().free(page);
        }
    }

    /** The long at byte {@code offset} of a block image (big-endian, as Buffer stores it). */
    public static long longAt(byte[] block, int offset) {
        return java.nio.ByteBuffer.wrap(block).getLong(offset);
    }
}
