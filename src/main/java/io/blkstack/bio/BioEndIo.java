package io.blkstack.bio;

/**
 * A bio's completion callback (the kernel's {@code bi_end_io}). It runs in atomic context: it must
 * not block and must not allocate with waiting (rule 2 of DESIGN.md section 1).
 */
@FunctionalInterface
public interface BioEndIo {

    /** Called once when the bio and every bio chained to it have completed. */
    void endIo(Bio bio);
}
