CREATE FUNCTION audit_head_advance() RETURNS trigger AS $$ BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; RETURN NEW; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_head_advance AFTER INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_head_advance();
