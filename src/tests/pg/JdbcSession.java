import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

/**
 * pgjdbc (Debian's libpostgresql-jdbc-java) against ProgressDB's PostgreSQL
 * listener, run by src/tests/pg.rs. Arguments: PORT BACKEND_KEY.
 * Prepared statements past pgjdbc's prepareThreshold (so it switches to
 * named server-side statements), RETURNING, a jsonb cast, typed getters,
 * an unsupported statement that leaves the connection usable, and another
 * user who sees nothing. Prints "ok" last; any failed check exits 1.
 */
public class JdbcSession {
    static void check(boolean condition, String what) {
        if (!condition) {
            System.out.println("FAILED: " + what);
            System.exit(1);
        }
    }

    static Connection connect(String port, String user, String key) throws SQLException {
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/chat?sslmode=disable&connectTimeout=20";
        return DriverManager.getConnection(url, user, key);
    }

    static String newThread(Connection c) throws SQLException {
        try (PreparedStatement p = c.prepareStatement("INSERT INTO threads (title) VALUES (?) RETURNING key")) {
            p.setString(1, "From JDBC");
            try (ResultSet r = p.executeQuery()) {
                check(r.next(), "RETURNING key gives a row");
                return r.getString(1);
            }
        }
    }

    static List<String> post(Connection c, String thread, int count) throws SQLException {
        List<String> keys = new ArrayList<>();
        String sql = "INSERT INTO messages (thread, body) VALUES (?, ?::jsonb) RETURNING key, created_ts";
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 0; i < count; i++) {
                p.setString(1, thread);
                p.setString(2, "{\"text\":\"m" + i + "\"}");
                try (ResultSet r = p.executeQuery()) {
                    check(r.next() && r.getLong("created_ts") > 0, "a posted message has created_ts");
                    keys.add(r.getString("key"));
                }
            }
        }
        return keys;
    }

    /** The newest two, read often enough to use a named server-side statement. */
    static void readNewest(Connection c, String thread, List<String> keys) throws SQLException {
        String sql = "SELECT key, body, created_ts, deleted FROM messages WHERE thread = ? ORDER BY created_ts DESC LIMIT 2";
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int round = 0; round < 8; round++) {
                p.setString(1, thread);
                List<String> seen = new ArrayList<>();
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) {
                        check(!r.getBoolean("deleted"), "live messages only");
                        check(r.getString("body").startsWith("{\"text\":\"m"), "body is the posted JSON");
                        seen.add(r.getString("key"));
                    }
                }
                List<String> expected = List.of(keys.get(keys.size() - 1), keys.get(keys.size() - 2));
                check(seen.equals(expected), "round " + round + ": newest two, newest first: " + seen);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String port = args[0], key = args[1];
        try (Connection alice = connect(port, "alice", key); Connection bob = connect(port, "bob", key)) {
            check(alice.getMetaData().getDatabaseProductName().equals("PostgreSQL"), "product name");
            String thread = newThread(alice);
            List<String> keys = post(alice, thread, 3);
            readNewest(alice, thread, keys);
            try (Statement s = alice.createStatement()) {
                s.execute("DROP TABLE messages");
                check(false, "DROP must fail");
            } catch (SQLException err) {
                check("0A000".equals(err.getSQLState()), "DROP answers 0A000, got " + err.getSQLState());
            }
            try (Statement s = alice.createStatement();
                 ResultSet r = s.executeQuery("SELECT key, title FROM threads ORDER BY created_ts DESC LIMIT 5")) {
                check(r.next() && r.getString("key").equals(thread), "the connection is usable after an error");
            }
            try (PreparedStatement p = bob.prepareStatement("SELECT key FROM messages WHERE thread = ? ORDER BY created_ts DESC LIMIT 5")) {
                p.setString(1, thread);
                try (ResultSet r = p.executeQuery()) {
                    check(!r.next(), "bob sees none of alice's messages");
                }
            }
        }
        System.out.println("ok");
    }
}
