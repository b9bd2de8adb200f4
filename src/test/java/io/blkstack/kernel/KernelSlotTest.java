package io.blkstack.kernel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Per-kernel state: one value per kernel and slot, created on first use, checked empty at close. */
class KernelSlotTest {

    /** A table that is empty once every entry was removed. */
    private static final class Table implements KernelSlot.Owned {
        final List<String> entries = new ArrayList<>();

        @Override
        public String leftOver() {
            return entries.isEmpty() ? null : "entries " + entries;
        }
    }

    private static final KernelSlot<Table> TABLE = KernelSlot.of("test table", k -> new Table());

    // Proves a slot's value is created once per kernel (the same object on every lookup) and that
    // two kernels get two values.
    @Test
    void oneValuePerKernel() {
        try (Kernel a = Kernel.builder().name("a").memory(1 << 20).build();
                Kernel b = Kernel.builder().name("b").memory(1 << 20).build()) {
            Table ofA = a.state(TABLE);
            assertSame(ofA, a.state(TABLE));
            assertNotSame(ofA, b.state(TABLE));
        }
    }

    // Proves the close check: a kernel whose table still holds an entry after its components
    // closed fails its close, naming the slot and what is left; an emptied table closes quietly.
    @Test
    void closeFailsWhenStateIsLeftOver() {
        Kernel leaky = Kernel.builder().name("leaky").memory(1 << 20).build();
        leaky.state(TABLE).entries.add("pool0");
        IllegalStateException e = assertThrows(IllegalStateException.class, leaky::close);
        assertTrue(e.getMessage().contains("test table") && e.getMessage().contains("pool0"), e.getMessage());

        Kernel tidy = Kernel.builder().name("tidy").memory(1 << 20).build();
        tidy.state(TABLE).entries.add("pool0");
        tidy.state(TABLE).entries.remove("pool0");
        tidy.close();
        assertTrue(tidy.isClosed());
        IllegalStateException closed = assertThrows(IllegalStateException.class, () -> tidy.state(TABLE));
        assertEquals(true, closed.getMessage().contains("closed"), closed.getMessage());
    }
}
