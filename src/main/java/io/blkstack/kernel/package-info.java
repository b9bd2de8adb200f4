/**
 * One independent block layer ({@code Kernel}) and its primitives: tasks, wait queues,
 * completions, mutexes and spin locks, the clock and timers, the two schedulers' interface, policy
 * switches, fault hooks, and per-task and per-kernel state slots ({@code TaskSlot},
 * {@code KernelSlot}). Every blocking operation of the core goes through this package.
 *
 * <p><b>Why {@code kernel} and {@code mem} depend on each other.</b> The page arena is part of
 * what one kernel is: DESIGN.md section 3 makes it the whole data-path budget of that kernel, so
 * the kernel creates it from its builder's memory size, starts its background reclaim task with
 * its own tasks, and closes it last, after every component gave its pages back. {@code mem} in
 * turn can only block through kernel primitives (its allocators wait on {@code WaitQueue}s, lock
 * with {@code SpinLock}s and read the task's {@code noio} scope). The only references from
 * {@code kernel} to {@code mem} are in {@code Kernel}, which creates, starts, hands out
 * ({@code pages()}) and closes the arena; putting the arena behind a kernel slot
 * would hide, not remove, that the kernel owns it. {@code architecture.LayeringTest} allows this
 * pair and no other cycle but {@code bio}/{@code block}.
 */
package io.blkstack.kernel;
