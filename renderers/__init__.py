"""Hash-grid NeRF renderer: encoding, field, ray marching, shading. Never imports the guidance."""
