package io.blkstack.nbd;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.BioVec;
import io.blkstack.block.SegmentViews;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Completion;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * Byte-granular writes over a device of larger logical blocks: the reader's read-modify-write.
 *
 * <p>An unaligned WRITE reads the old contents of its partial first and last block
 * ({@link #readEndBlocks}) before any payload is read, and its first and last data bio get those
 * old bytes around the payload ({@link #mergeEnds}). An unaligned WRITE_ZEROES zeroes the client's
 * bytes of a partial block by reading the block, zeroing them and writing it back
 * ({@link #zeroInBlock}). Each step is one synchronous bio of one logical block through one page,
 * submitted before the reader waits and freed before it allocates anything else (rule 1 of
 * DESIGN.md section 1: never two unsubmitted units of one pool); the page comes out of the
 * request's budget charge. The caller registered the request as serialising with the device's
 * tracked requests, so no other write to those blocks runs between the read and the write.
 * Used by the reader task only.
 */
final class ReadModifyWrite {

    /** The completion of a synchronous bio: signal the reader; never blocks. */
    private static final BioEndIo SYNC_END_IO = bio -> ((Completion) bio.privateData()).complete();

    private final String name;
    private final RequestBios bios;
    private final int blockBytes;
    /** The old contents of the first and last logical block of an unaligned write (one page each). */
    private final ByteBuffer rmwBlocks = ByteBuffer.allocateDirect(2 * Page.SIZE);
    /** Signalled by the completion of the reader's one synchronous bio. */
    private final Completion syncDone;
    private final BioIter iter = new BioIter();
    private final ByteBuffer[] views = new ByteBuffer[Bio.VECS_MAX];

    ReadModifyWrite(String name, RequestBios bios) {
        this.name = name;
        this.bios = bios;
        this.blockBytes = bios.blockBytes;
        this.syncDone = new Completion(name + " read-modify-write");
    }

    /**
     * Reads the old contents of the partial first block (into the first page of
     * {@link #rmwBlocks}) and the partial last block (into the second); one block when both ends
     * lie in the same block. False on an I/O error.
     */
    boolean readEndBlocks(long start, long paddedEnd, int head, int tail) {
        if (head != 0 && !syncBlockIo(BioOp.READ, 0, start, rmwBlocks.slice(0, blockBytes))) {
            return false;
        }
        if (tail == 0) {
            return true;
        }
        long lastBlock = paddedEnd - blockBytes;
        if (head != 0 && lastBlock == start) {
            rmwBlocks.put(Page.SIZE, rmwBlocks, 0, blockBytes);
            return true;
        }
        return syncBlockIo(BioOp.READ, 0, lastBlock, rmwBlocks.slice(Page.SIZE, blockBytes));
    }

    /**
     * Puts the old bytes around a write bio's payload: the first {@code skip} bytes of the first
     * block and the last {@code cut} bytes of the last block, as {@link #readEndBlocks} read them.
     */
    void mergeEnds(Bio bio, int n, int skip, int cut) {
        if (skip > 0) {
            copyIntoBio(bio, 0, rmwBlocks.slice(0, skip));
        }
        if (cut > 0) {
            copyIntoBio(bio, n - cut, rmwBlocks.slice(Page.SIZE + blockBytes - cut, cut));
        }
    }

    /** Zeroes bytes {@code [from, to)} of the block at {@code blockStart} by read-modify-write; false on an I/O error. */
    boolean zeroInBlock(long blockStart, int from, int to, int flags) {
        ByteBuffer block = rmwBlocks.slice(0, blockBytes);
        if (!syncBlockIo(BioOp.READ, 0, blockStart, block)) {
            return false;
        }
        for (int i = from; i < to; i++) {
            block.put(i, (byte) 0);
        }
        return syncBlockIo(BioOp.WRITE, flags, blockStart, block);
    }

    /**
     * One logical block of synchronous I/O by the reader, through one page: a READ copies the
     * block into {@code data}, a WRITE writes {@code data} (one block) to it. False on an I/O error
     * (or when the kernel closes).
     */
    private boolean syncBlockIo(BioOp op, int flags, long position, ByteBuffer data) {
        if (data.remaining() != blockBytes) {
            throw new IllegalArgumentException(name + ": block I/O of " + data.remaining() + " bytes, block " + blockBytes);
        }
        Bio bio = bios.allocDataBio(blockBytes);
        if (bio == null) {
            return false;
        }
        try {
            if (op == BioOp.WRITE) {
                copyIntoBio(bio, 0, data.duplicate());
            }
            syncDone.reinit();
            bio.init(bios.device(), op, flags, position >>> Bio.SECTOR_SHIFT);
            bio.setEndIo(SYNC_END_IO).setPrivateData(syncDone);
            Submit.submitBio(bio);
            syncDone.await();
            if (bio.status() != BioStatus.OK) {
                return false;
            }
            if (op == BioOp.READ) {
                iter.resetAll(bio);
                int count = SegmentViews.fill(iter, views, 0);
                ByteBuffer dst = data.duplicate();
                for (int i = 0; i < count; i++) {
                    dst.put(views[i]);
                }
                Arrays.fill(views, 0, count, null);
            }
            return true;
        } finally {
            bios.free(bio);
        }
    }

    /** Copies {@code src} into a bio's pages from byte {@code bioOffset} of the bio on. */
    private static void copyIntoBio(Bio bio, int bioOffset, ByteBuffer src) {
        BioVec[] vecs = bio.vecs();
        int skip = bioOffset;
        for (int i = 0; i < bio.vecCount() && src.hasRemaining(); i++) {
            int length = vecs[i].length();
            if (skip >= length) {
                skip -= length;
                continue;
            }
            int k = Math.min(length - skip, src.remaining());
            ByteBuffer dst = vecs[i].page().slice(vecs[i].offset() + skip, k);
            ByteBuffer part = src.slice(src.position(), k);
            dst.put(part);
            src.position(src.position() + k);
            skip = 0;
        }
        if (src.hasRemaining()) {
            throw new IllegalStateException("bio " + bio + ": " + src.remaining() + " byte(s) past its end at " + bioOffset);
        }
    }
}
