/**
 * Bios and bio sets: {@code Bio}, {@code BioVec}, the iterator, {@code BioSet} with its rescuer,
 * chain, split, clone, advance, trim and the status a bio completes with.
 *
 * <p><b>Why {@code bio} and {@code block} depend on each other.</b> They are one layer (Linux keeps
 * {@code bio.c} and the submit loop of {@code blk-core.c} side by side in {@code block/}), split
 * into two packages so each reads in one sitting. {@code block} submits, splits and completes
 * bios; {@code bio} needs two things of {@code block} that no narrower interface would make
 * simpler: a bio is addressed to a {@code BlockDevice} (targets remap it to another one and the
 * submit loop orders bios by it), and a bio set's rescuer (seed 000, rule 1 of DESIGN.md section
 * 1) must take <em>this set's</em> bios off the current task's pending lists of the submit loop
 * ({@code block.Submit}) and resubmit them from its own task. Nothing else in {@code bio} refers
 * to {@code block}; {@code architecture.LayeringTest} allows this pair and no other cycle but
 * {@code kernel}/{@code mem}.
 */
package io.blkstack.bio;
