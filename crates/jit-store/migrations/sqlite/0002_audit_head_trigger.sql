CREATE TRIGGER audit_head_advance AFTER INSERT ON audit_events BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; END;
